"""Saving and restoring an annotation: committed labels, prompts and settings.

Files are replaced atomically (written aside, then renamed), so a crash while saving
leaves the previous save intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ActiveSamError

ANNOTATION_FORMAT = "napari-active-sam-annotation/1"


@dataclass
class SavedAnnotation:
    """What a saved annotation holds.

    Attributes
    ----------
    labels : np.ndarray
        Committed objects, the output layer's data.
    points : np.ndarray
        ``(N, ndim)`` prompt coordinates in napari's data order.
    positive : np.ndarray
        ``(N,)`` booleans, the prompts' polarity.
    settings : dict
        Model, window and image name, to restore the widget.
    """

    labels: np.ndarray
    points: np.ndarray
    positive: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)


def _replace(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_annotation(folder: Path | str, annotation: SavedAnnotation) -> Path:
    """Write ``annotation`` into ``folder`` (created if needed).

    Raises
    ------
    ActiveSamError
        If the folder cannot be written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)

        def write_labels(name: str) -> None:
            with open(name, "wb") as handle:
                np.save(handle, np.asarray(annotation.labels))

        _replace(folder / "labels.npy", write_labels)
        record = {
            "format": ANNOTATION_FORMAT,
            "points": np.asarray(annotation.points, float).tolist(),
            "positive": np.asarray(annotation.positive, bool).tolist(),
            "settings": annotation.settings,
        }
        _replace(folder / "annotation.json", lambda name: Path(name).write_text(
            json.dumps(record, indent=1)))  # fmt: skip
    except OSError as exc:
        raise ActiveSamError(
            f"Could not save the annotation to {folder} ({exc}): choose a writable folder."
        ) from exc
    return folder


def load_annotation(folder: Path | str) -> SavedAnnotation:
    """Read an annotation written by :func:`save_annotation`.

    Raises
    ------
    ActiveSamError
        If ``folder`` holds no annotation, or one this version cannot read.
    """
    folder = Path(folder)
    index = folder / "annotation.json"
    if not index.is_file() or not (folder / "labels.npy").is_file():
        raise ActiveSamError(f"{folder} holds no saved annotation: choose the folder you saved.")
    record = json.loads(index.read_text())
    if record.get("format") != ANNOTATION_FORMAT:
        raise ActiveSamError(f"{folder} holds an annotation in an unknown format.")
    labels = np.load(folder / "labels.npy", allow_pickle=False)
    points = np.asarray(record["points"], float).reshape(-1, labels.ndim)
    return SavedAnnotation(
        labels=labels,
        points=points,
        positive=np.asarray(record["positive"], bool),
        settings=record.get("settings", {}),
    )
