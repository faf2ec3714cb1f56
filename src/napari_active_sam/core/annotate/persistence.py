"""Saving and restoring an annotation: committed labels, prompts and settings.

A save is one file, ``annotation.npz`` in the annotation folder: a zip archive holding
``labels.npy``, ``points.npy``, ``positive.npy`` and ``annotation.json`` (format and
settings), which ``numpy.load`` also reads. It is written aside under a temporary name,
flushed to disk and then renamed over the previous save in one step, so a crash at any
moment leaves either the previous save or the new one, never a mix of both. Temporary
files left by a killed save are removed by the next save or load. Folders saved by the
first format (``labels.npy`` and ``annotation.json`` side by side) still load.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnnotationFileError, SaveError

ANNOTATION_FORMAT = "napari-active-sam-annotation/2"
SAVE_NAME = "annotation.npz"
_TEMPORARY_PREFIX = f".{SAVE_NAME}.tmp-"
_FORMAT_1 = "napari-active-sam-annotation/1"
_FORMAT_1_FILES = ("annotation.json", "labels.npy")
# What reading a damaged archive, array or record can raise.
_DAMAGED = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


@dataclass
class SavedAnnotation:
    """What a saved annotation holds.

    Attributes
    ----------
    labels : np.ndarray
        Committed objects, the output layer's data (integers, any number of dimensions).
    points : np.ndarray
        ``(N, labels.ndim)`` prompt coordinates in napari's data order.
    positive : np.ndarray
        ``(N,)`` booleans, the prompts' polarity.
    settings : dict
        Model, window and image name, to restore the widget.
    """

    labels: np.ndarray
    points: np.ndarray
    positive: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)


def save_annotation(folder: Path | str, annotation: SavedAnnotation) -> Path:
    """Write ``annotation`` into ``folder`` (created if needed), replacing its last save
    in one atomic rename.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    SaveError
        If the save cannot be written, or the folder holds the save of another image (named
        by the ``image`` setting of both); the folder's previous save is then left as it
        was.
    """
    folder = Path(folder)
    image, other = annotation.settings.get("image"), saved_image(folder)
    if image is not None and other is not None and other != image:
        raise SaveError(
            f"Nothing was saved: {folder} holds the annotation of image {other!r}, and this is "
            f"{image!r}. Choose another annotation folder for {image!r}; {other!r}'s is "
            "unchanged."
        )
    labels = np.asarray(annotation.labels)
    arrays = {
        "labels": labels,
        "points": np.asarray(annotation.points, float).reshape(-1, labels.ndim),
        "positive": np.asarray(annotation.positive, bool),
    }
    record = json.dumps({"format": ANNOTATION_FORMAT, "settings": annotation.settings})
    temporary = folder / f"{_TEMPORARY_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(folder)
        with open(temporary, "xb") as handle:
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                archive.writestr("annotation.json", record)
                for name, array in arrays.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, folder / SAVE_NAME)
        _sync_folder(folder)
    except OSError as exc:
        raise SaveError(
            f"Nothing was saved to {folder} ({exc}); its last save, if any, is unchanged: "
            "choose a writable folder and save again."
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    for name in _FORMAT_1_FILES:  # the first format's files, superseded by this save
        with contextlib.suppress(OSError):
            (folder / name).unlink(missing_ok=True)
    return folder


def load_annotation(folder: Path | str) -> SavedAnnotation:
    """Read the annotation saved in ``folder`` by :func:`save_annotation`.

    Raises
    ------
    AnnotationFileError
        If ``folder`` holds no annotation, a damaged one, or one in a format this version
        cannot read; the message names the folder and what to do.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AnnotationFileError(
            f"{folder} is a file, not an annotation folder: choose the folder you saved to."
        )
    _remove_leftovers(folder)
    try:
        if (folder / SAVE_NAME).exists():
            return _read(folder / SAVE_NAME)
        if all((folder / name).is_file() for name in _FORMAT_1_FILES):
            return _read_format_1(folder)
    except _DAMAGED as exc:
        raise AnnotationFileError(
            f"The annotation saved in {folder} is damaged ({exc}): choose another annotation "
            "folder, or save again to replace it."
        ) from exc
    raise AnnotationFileError(
        f"{folder} holds no saved annotation: choose the folder you saved to."
    )


def saved_image(folder: Path | str) -> str | None:
    """The name of the image whose annotation ``folder`` holds (its ``image`` setting), read
    without its arrays; None if the folder holds no readable save or the save names none."""
    folder = Path(folder)
    try:
        if (folder / SAVE_NAME).is_file():
            with zipfile.ZipFile(folder / SAVE_NAME) as archive:
                record = json.loads(archive.read("annotation.json"))
        elif (folder / "annotation.json").is_file():
            record = json.loads((folder / "annotation.json").read_bytes())
        else:
            return None
    except (*_DAMAGED, OSError):
        return None
    settings = record.get("settings") if isinstance(record, dict) else None
    image = settings.get("image") if isinstance(settings, dict) else None
    return image if isinstance(image, str) else None


def _read(path: Path) -> SavedAnnotation:
    with zipfile.ZipFile(path) as archive:

        def array(name: str) -> np.ndarray:
            with archive.open(f"{name}.npy") as member:
                return np.lib.format.read_array(member, allow_pickle=False)

        record = _record(archive.read("annotation.json"), ANNOTATION_FORMAT, path.parent)
        return _checked(array("labels"), array("points"), array("positive"), record)


def _read_format_1(folder: Path) -> SavedAnnotation:
    record = _record((folder / "annotation.json").read_bytes(), _FORMAT_1, folder)
    labels = np.load(folder / "labels.npy", allow_pickle=False)
    points, positive = record["points"], record["positive"]
    if not isinstance(positive, list) or not all(isinstance(p, bool) for p in positive):
        raise ValueError("the prompts' polarity is not a list of true and false")
    if not isinstance(points, list):
        raise ValueError("the prompts are not a list of points")
    points = np.asarray(points, float).reshape(-1, labels.ndim)
    return _checked(labels, points, np.asarray(positive, bool), record)


def _record(text: bytes, expected: str, folder: Path) -> dict[str, Any]:
    """The JSON record ``text`` of format ``expected``, saved in ``folder``."""
    record = json.loads(text)
    if not isinstance(record, dict) or not isinstance(record.get("format"), str):
        raise ValueError("its record names no format")
    if record["format"] != expected:
        raise AnnotationFileError(
            f"{folder} holds an annotation in format {record['format']!r}, which this version "
            "cannot read: update napari-active-sam, or choose another annotation folder."
        )
    if not isinstance(record.get("settings", {}), dict):
        raise ValueError("its settings are not a mapping")
    return record


def _checked(labels: np.ndarray, points: np.ndarray, positive: np.ndarray,
             record: dict[str, Any]) -> SavedAnnotation:  # fmt: skip
    """The annotation, once its arrays are seen to fit together."""
    if labels.ndim < 1 or not (labels.dtype == bool or np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"the labels are a {labels.ndim}-d {labels.dtype} array, not integers")
    if not np.issubdtype(points.dtype, np.number) or points.shape[1:] != (labels.ndim,):
        raise ValueError(f"the prompts are {points.dtype} of shape {points.shape}, not "
                         f"(N, {labels.ndim}) numbers")  # fmt: skip
    if not np.isfinite(points).all():
        raise ValueError("some prompts are not finite numbers")
    if positive.dtype != bool or positive.shape != (len(points),):
        raise ValueError(f"the prompts' polarity is {positive.dtype} of shape {positive.shape},"
                         f" not ({len(points)},) booleans")  # fmt: skip
    return SavedAnnotation(labels, points.astype(float), positive, record.get("settings", {}))


def _remove_leftovers(folder: Path) -> None:
    """Remove the temporary files of saves killed in other processes."""
    own = f"{_TEMPORARY_PREFIX}{os.getpid()}-"
    with contextlib.suppress(OSError):
        for path in folder.glob(f"{_TEMPORARY_PREFIX}*"):
            if not path.name.startswith(own):
                with contextlib.suppress(OSError):
                    path.unlink()


def _sync_folder(folder: Path) -> None:
    """Flush the rename to disk where the system allows opening a folder (POSIX)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
