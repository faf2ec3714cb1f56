"""Files fitted for a model and kept beside it: its Bayesian head, its quality regressors.

A companion of kind ``KIND`` lives in one of two places: the one the user fitted for a
model, in the cache by model id, or the one that comes with the model, ``NAME.KIND.pt``
next to its checkpoint (a local file, the bundled demo model, or downloaded weights). The
user's own is preferred. Companions are written atomically and read with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from ..errors import CheckpointError
from ..keeping import save_or_keep, written_whole
from .checkpoints import LoadedModel, ModelRef, load_weights_only
from .downloads import bundled_path, cache_dir
from .registry import get_spec, model_names


@dataclass(frozen=True)
class Companion:
    """One kind of companion file.

    Attributes
    ----------
    kind : str
        File kind, in the name (``NAME.KIND.pt``) and inside the file.
    title : str
        What it is, for messages ("Bayesian head").
    remedy : str
        What to do when it is missing or damaged ("fit one with ...").
    """

    kind: str
    title: str
    remedy: str

    def beside(self, checkpoint: Path) -> Path:
        """The companion kept next to a checkpoint: ``NAME.KIND.pt``."""
        checkpoint = Path(checkpoint)
        return checkpoint.with_name(f"{checkpoint.stem}.{self.kind}.pt")

    def users(self, model_id: str) -> Path:
        """Where the companion the user fitted for a model is kept: the cache, by model id."""
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_id)
        return cache_dir() / self.kind / f"{safe}.{self.kind}.pt"

    def shipped(self, ref: ModelRef) -> Path:
        """The companion that comes with a model: next to a local checkpoint or the bundled
        file, else beside the downloaded weights in the cache."""
        if ref.checkpoint is not None:
            return self.beside(Path(ref.checkpoint))
        spec = get_spec(ref.name)
        base = bundled_path(spec.bundled) if spec.bundled else cache_dir() / spec.filename
        return self.beside(base)

    def candidates(self, model: LoadedModel, checkpoint: Path | None = None) -> list[Path]:
        """Where to look for a loaded model's companion, in order: the user's own, then the
        one next to ``checkpoint`` or shipped with a registered model."""
        found = [self.users(model.model_id)]
        if checkpoint is not None:
            found.append(self.beside(Path(checkpoint)))
        elif model.name in model_names():
            found.append(self.shipped(ModelRef(model.name)))
        return found

    def find(self, model: LoadedModel, checkpoint: Path | None = None) -> Path | None:
        """The first of :meth:`candidates` that exists, or None."""
        return next((p for p in self.candidates(model, checkpoint) if p.is_file()), None)

    def find_for(self, ref: ModelRef) -> Path | None:
        """The companion for a model not loaded yet (the user's own, else the shipped one),
        or None."""
        for path in (self.users(ref.model_id()), self.shipped(ref)):
            if path.is_file():
                return path
        return None

    def save(self, path: Path, payload: dict[str, Any]) -> Path:
        """Write ``payload`` atomically with ``torch.save``, tagged with the kind.

        Raises
        ------
        SaveError
            ``path`` cannot be written; the file is then kept in the fallback folder the
            message names.
        """
        tagged = {**payload, "kind": f"napari-active-sam {self.kind}"}

        def write(target: Path) -> Path:
            target.parent.mkdir(parents=True, exist_ok=True)
            return written_whole(lambda partial: torch.save(tagged, partial), target)

        return save_or_keep(write, Path(path), f"the {self.title}")

    def read(self, path: Path) -> dict[str, Any]:
        """Read a file written by :meth:`save`, weights only.

        Raises
        ------
        CheckpointError
            No file, an unreadable one, one holding Python objects beyond tensors, or one of
            another kind; the message names the file and what to do.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"No {self.title} at {path}: {self.remedy}.")
        remedy = self.remedy[0].upper() + self.remedy[1:]
        payload = load_weights_only(path, f"a {self.title} file", remedy)
        if not isinstance(payload, dict) or payload.get("kind") != f"napari-active-sam {self.kind}":
            raise CheckpointError(
                f"{path} is not a napari-active-sam {self.title} file: {self.remedy}."
            )
        return payload

    def damaged(self, path: Path, error: Exception) -> CheckpointError:
        """The error for a file of this kind whose contents do not fit."""
        return CheckpointError(f"{path} is damaged ({error}): {self.remedy}.")


class FittedCompanion:
    """What is saved as a companion of a model (a Bayesian head, quality regressors): its
    :class:`Companion` kind and a ``load`` that checks the file fits the model."""

    companion: ClassVar[Companion]

    @classmethod
    def load(cls, path: Path, model: LoadedModel | None = None) -> Self:
        raise NotImplementedError

    @classmethod
    def for_model(cls, model: LoadedModel, checkpoint: Path | None = None) -> Self | None:
        """The one to use with a loaded model: the user's own, else the one next to
        ``checkpoint`` or shipped with a registered model; None if it has none.

        Raises
        ------
        ModelError
            A file found for the model but fitted for other weights.
        """
        path = cls.companion.find(model, checkpoint)
        return cls.load(path, model) if path is not None else None
