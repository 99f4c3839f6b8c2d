"""napari-medsegfm: promptable segmentation of medical images, in napari and headless."""
__version__ = "0.1.0"
