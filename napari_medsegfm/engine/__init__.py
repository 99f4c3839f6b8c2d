"""The interactive engine: the annotation session and its parts (labels, undo, prompt log, worker).

Qt-free and torch-free; see docs/architecture.md. It never imports :mod:`napari_medsegfm.tasks`.
"""
