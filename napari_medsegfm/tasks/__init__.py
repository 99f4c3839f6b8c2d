"""Challenge tasks on top of the engine: predict, evaluation, metrics, simulated clicks, text scoring.

Qt-free and torch-free; see docs/architecture.md.
"""
