"""Computation without a GUI: models, preprocessing, embeddings, prediction.

Nothing in this package imports Qt, napari or magicgui (an import-linter contract in
``pyproject.toml`` and ``tests/test_import_boundaries.py`` enforce it).
"""
