"""Files fitted for a model and kept beside it: its Bayesian head, its quality regressors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..enums import ModelName
from ..errors import CheckpointError
from .checkpoints import LoadedModel, ModelRef, bundled_path, cache_dir
from .registry import get_spec


def companion_path(checkpoint: Path, kind: str) -> Path:
    """A file fitted for a checkpoint, kept next to it: ``NAME.KIND.pt`` (e.g. its
    Bayesian head, ``kind="head"``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{kind}.pt")


def user_companion_path(model_id: str, kind: str) -> Path:
    """Where a companion the user fitted for a model is kept: the cache, by model id."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_id)
    return cache_dir() / kind / f"{safe}.{kind}.pt"


def shipped_companion_path(ref: ModelRef, kind: str) -> Path:
    """The companion that comes with a model: next to a local checkpoint or the bundled
    file, else beside the downloaded weights in the cache."""
    if ref.checkpoint is not None:
        return companion_path(Path(ref.checkpoint), kind)
    spec = get_spec(ref.name)
    base = bundled_path(spec.bundled) if spec.bundled else cache_dir() / spec.filename
    return companion_path(base, kind)


def companion_candidates(model: LoadedModel, kind: str, checkpoint: Path | None) -> list[Path]:
    """Where to look for a loaded model's companion, in order: the user's own, then the one
    next to ``checkpoint`` or shipped with a registered model."""
    candidates = [user_companion_path(model.model_id, kind)]
    if checkpoint is not None:
        candidates.append(companion_path(Path(checkpoint), kind))
    elif model.name in {m.value for m in ModelName}:
        candidates.append(shipped_companion_path(ModelRef(model.name), kind))
    return candidates


def save_companion(path: Path, kind: str, payload: dict[str, Any]) -> Path:
    """Write a companion file atomically with ``torch.save``, tagged with its ``kind``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({**payload, "kind": f"napari-active-sam {kind}"}, partial)
    partial.replace(path)
    return path


def read_companion(path: Path, kind: str, title: str, remedy: str) -> dict[str, Any]:
    """Read a companion file written by :func:`save_companion`, weights only.

    Raises
    ------
    CheckpointError
        No file, an unreadable one, or one of another kind; the message names ``title``
        (e.g. "Bayesian head") and what to do (``remedy``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No {title} at {path}: {remedy}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets one message
        raise CheckpointError(f"{path} is not a {title} file ({error}): {remedy}.") from None
    if not isinstance(payload, dict) or payload.get("kind") != f"napari-active-sam {kind}":
        raise CheckpointError(f"{path} is not a napari-active-sam {title} file: {remedy}.")
    return payload


def find_companion(model: LoadedModel, kind: str, checkpoint: Path | None) -> Path | None:
    """The first of :func:`companion_candidates` that exists, or None."""
    return next((p for p in companion_candidates(model, kind, checkpoint) if p.is_file()), None)
