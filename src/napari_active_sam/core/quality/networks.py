"""The learned quality estimators' networks and their file, kept beside the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision
from torch import nn

from ..engine.checkpoints import LoadedModel
from ..engine.companions import Companion, FittedCompanion
from ..errors import ModelError
from .features import CROP_SIZE

QUALITY_FORMAT = 1


QUALITY = Companion(
    "quality", "quality regressor", "train one with `napari-active-sam train-quality`"
)
"""The regressors' file: ``NAME.quality.pt`` beside their model, or the user's own in the
cache."""


class CropQualityNet(nn.Module):
    """EvanySeg's regressor: torchvision's MobileNetV3-Small (half width, one output).

    ``forward`` takes uint8 or float crops ``(B, 3, S, S)`` in 0-255 and returns the
    predicted Dice ``(B,)`` in [0, 1].
    """

    def __init__(self, size: int = CROP_SIZE):
        super().__init__()
        self.size = size
        self.backbone = torchvision.models.mobilenet_v3_small(num_classes=1, width_mult=0.5)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = (crops.float() / 255.0 - 0.5) / 0.25
        return torch.sigmoid(self.backbone(x)[:, 0])


class FeatureQualityNet(nn.Module):
    """The fast regressor: standardised features into torchvision's ``MLP`` (64, 32, 1).

    ``forward`` takes ``(B, F)`` features from :func:`.features.embedding_features` and returns the
    predicted Dice ``(B,)`` in [0, 1].
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.register_buffer("centre", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        self.mlp = torchvision.ops.MLP(in_features, [64, 32, 1], activation_layer=nn.ReLU)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.centre) / self.scale
        return torch.sigmoid(self.mlp(x)[:, 0])


@dataclass(eq=False)
class QualityRegressor(FittedCompanion):
    """The two learned estimators of one model, saved together.

    Attributes
    ----------
    crop_net : CropQualityNet
    feature_net : FeatureQualityNet
    model_id : str
        :attr:`LoadedModel.model_id` of the model the training data came from.
    info : dict
        How it was trained: examples, steps, validation errors and correlations, wall time.
    """

    crop_net: CropQualityNet
    feature_net: FeatureQualityNet
    model_id: str
    info: dict[str, Any] = field(default_factory=dict)
    companion: ClassVar[Companion] = QUALITY

    def __post_init__(self):
        self.crop_net.eval()
        self.feature_net.eval()

    @property
    def crop_size(self) -> int:
        return self.crop_net.size

    def check_model(self, model: LoadedModel) -> None:
        """Raise :class:`ModelError` unless the regressor was trained for ``model``."""
        if model.model_id != self.model_id:
            raise ModelError(
                f"This quality regressor was trained for model {self.model_id}, not "
                f"{model.model_id}: train one for this model (`napari-active-sam "
                "train-quality`) or choose the model it was made for."
            )

    @torch.inference_mode()
    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """float32 ``(N,)`` predicted Dice of uint8 ``(N, 3, S, S)`` crops."""
        return self.crop_net(torch.as_tensor(np.asarray(crops))).numpy()

    @torch.inference_mode()
    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """float32 ``(N,)`` predicted Dice of ``(N, F)`` embedding features."""
        return self.feature_net(torch.as_tensor(np.asarray(features, np.float32))).numpy()

    # ----------------------------------------------------------------------- files

    def save(self, path: Path) -> Path:
        """Write the weights (float16, to keep the file small) with ``torch.save``."""

        def compact(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}

        payload = {
            "format": QUALITY_FORMAT,
            "crop_size": self.crop_size,
            "in_features": int(self.feature_net.centre.numel()),
            "crop_net": compact(self.crop_net.state_dict()),
            "feature_net": compact(self.feature_net.state_dict()),
            "model_id": self.model_id,
            "info": self.info,
        }
        return QUALITY.save(path, payload)

    @classmethod
    def load(cls, path: Path, model: LoadedModel | None = None) -> QualityRegressor:
        """Read a regressor saved by :meth:`save` (weights only); check it fits ``model``.

        Raises
        ------
        CheckpointError
            No file, or not a quality regressor file.
        ModelError
            A regressor trained for another model than ``model``.
        """
        payload = QUALITY.read(path)

        def full(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

        try:
            crop_net = CropQualityNet(int(payload["crop_size"]))
            feature_net = FeatureQualityNet(int(payload["in_features"]))
            crop_net.load_state_dict(full(payload["crop_net"]))
            feature_net.load_state_dict(full(payload["feature_net"]))
            info = dict(payload["info"])
            regressor = cls(crop_net, feature_net, str(payload["model_id"]), info)
        except (KeyError, AttributeError, TypeError, ValueError, RuntimeError) as error:
            raise QUALITY.damaged(path, error) from None
        if model is not None:
            regressor.check_model(model)
        return regressor
