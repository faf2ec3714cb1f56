"""An adapter: the weights adaptation changed, kept apart from the model they adapt.

A file holds only the weights adaptation trained (the prompt encoder's and mask decoder's,
and the image encoder's when it was trained too), the identity of the base model and what
the adaptation measured. It is read with ``torch.load(weights_only=True)``,
refused for any other base model, and applied to a copy of the base model, which gets its
own identity (its Bayesian head and quality regressors are those fitted for it, if any).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engine.checkpoints import LoadedModel, ModelRef, model_id
from ..engine.companions import Companion
from ..errors import ModelError
from .finetune import ENCODER, TRAINED

ADAPTER = Companion("adapter", "adapter", "make one with `napari-active-sam adapt`")


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of an adapter's weights (names, shapes and values)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def adapted_sha256(base_sha256: str, digest: str) -> str:
    """The weight hash an adapted model goes by: its base model's and its adapter's, joined
    (so its model id, and the companions found by it, are its own)."""
    return hashlib.sha256(f"{base_sha256}+{digest}".encode()).hexdigest()


@dataclass
class Adapter:
    """Adapted weights for one base model.

    Attributes
    ----------
    state : dict
        ``Sam.state_dict`` keys of the parts trained → tensors.
    base_model_id : str
        :attr:`LoadedModel.model_id` of the model adapted.
    report : dict
        What the adaptation measured (objects, stages, held-out IoU before and after), and
        ``magnify``: the first-window magnification the adapted model decodes at.
    """

    state: dict[str, torch.Tensor]
    base_model_id: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return state_digest(self.state)

    def save(self, path: Path) -> Path:
        """Write the adapter atomically (see :meth:`Companion.save`)."""
        payload = {"state": self.state, "base_model_id": self.base_model_id,
                   "report": self.report}  # fmt: skip
        return ADAPTER.save(path, payload)

    @classmethod
    def load(cls, path: Path, model: LoadedModel | None = None) -> Adapter:
        """Read an adapter; with ``model``, check it was made for that model.

        Raises
        ------
        CheckpointError
            No file, a damaged one, or one that is not an adapter.
        ModelError
            An adapter for another model.
        """
        path = Path(path)
        payload = ADAPTER.read(path)
        try:
            state = {str(k): v for k, v in payload["state"].items()}
            if not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise TypeError("weights that are not tensors")
            if not state or any(k.split(".")[0] not in (*TRAINED, ENCODER) for k in state):
                raise ValueError("weights of parts an adapter does not change")
            adapter = cls(state, str(payload["base_model_id"]), dict(payload.get("report", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ADAPTER.damaged(path, error) from error
        if model is not None:
            adapter.check_model(model, path)
        return adapter

    def adapted_id(self, ref: ModelRef) -> str:
        """The model id of ``ref`` with this adapter applied, without loading the model."""
        return model_id(ref.name, adapted_sha256(ref.weights_sha256(), self.digest))

    def check_base(self, model_id: str, name: str, path: Path | None = None) -> None:
        """Refuse a base model other than the one adapted (by id; ``name`` for the message).

        Raises
        ------
        ModelError
        """
        if model_id != self.base_model_id:
            where = f" ({path})" if path else ""
            raise ModelError(
                f"This adapter{where} was made for model {self.base_model_id}, not "
                f"{model_id}: load that model, or adapt {name} to your images."
            )

    def check_model(self, model: LoadedModel, path: Path | None = None) -> None:
        """Refuse a model other than the base model, or one whose weights do not fit."""
        where = f" ({path})" if path else ""
        self.check_base(model.model_id, model.name, path)
        own = model.sam.state_dict()
        for key, value in self.state.items():
            if key not in own or own[key].shape != value.shape:
                raise ModelError(f"This adapter{where} does not fit {model.model_id}: weight "
                                 f"{key} differs. Adapt the model again.")  # fmt: skip

    def apply(self, model: LoadedModel) -> LoadedModel:
        """A copy of ``model`` with the adapted weights, under its own identity.

        Raises
        ------
        ModelError
            ``model`` is not the adapter's base model.
        """
        self.check_model(model)
        adapted = copy.copy(model)
        adapted.sam = copy.deepcopy(model.sam)
        adapted.sam.load_state_dict(self.state, strict=False)
        adapted.sam.requires_grad_(False)
        adapted.sam.eval()
        adapted.weights_sha256 = adapted_sha256(model.weights_sha256, self.digest)
        adapted.extra = {**model.extra, "base_model_id": model.model_id, "adapter": self.digest}
        if "magnify" in self.report:  # the zoom of the objects it was adapted on
            adapted.extra["magnify"] = float(self.report["magnify"])
        if not any(key.startswith(f"{ENCODER}.") for key in self.state):
            adapted.extra["encoder_id"] = model.encoder_id  # its embeddings stay valid
        return adapted
