"""The BALD-SAM head: a small Bayesian network on SAM's output that samples masks.

Input, on acquisition cells
(:data:`~napari_active_sam.core.engine.geometry.ACQUISITION_CELL`; SAM's own
low-resolution grid, 256 × 256, for a 1024 model): one SAM head's logits, averaged over
each cell and clipped to ±20, and a positive- and a negative-click map (a Gaussian of
σ = 8 cells at a 256-cell grid, scaled with the grid, per click, summed and clamped to
[0, 1]).
Layers: conv3×3 (3→16) + ReLU, conv3×3 (16→16) + ReLU, conv1×1 (16→1), whose output is
added to SAM's clipped logits, so an untrained head reproduces SAM.

The head is first trained to its MAP estimate on simulated click sets, then a Laplace
posterior over the final 1×1 convolution (16 weights and a bias) is fitted with
laplace-torch, every grid pixel a data point with features ``(P, 16)``. Each posterior
sample of those 17 weights turns the shared features into one probability map, so the K
maps cost one matrix product. For BALD the head refines each of SAM's three multimask heads
and the K samples are spread over them: the posterior is uniform over SAM's heads (EIG's
posterior) and, within each, the head's Laplace posterior.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from ..engine.checkpoints import LoadedModel
from ..engine.companions import Companion, FittedCompanion
from ..engine.device import to_device
from ..engine.geometry import CellGrid, acquisition_grid
from ..errors import ActiveSamError, ModelError
from ..prompts import PromptSet

Inputs = TypeVar("Inputs", np.ndarray, torch.Tensor)

LOGIT_CLIP = 20.0
"""SAM's logits enter the head clipped to ``[-LOGIT_CLIP, LOGIT_CLIP]``."""


CLICK_SIGMA = 8.0
"""Click-map Gaussian σ in pixels of a 256 grid; other grids scale it."""


HIDDEN = 16


DEFAULT_SAMPLES = 32


MAX_SAMPLES = 256
"""Posterior samples are capped here (and by :data:`MAX_SAMPLE_VALUES`)."""


MAX_SAMPLE_VALUES = 2**26
"""At most this many sampled grid values (K × grid²) per call: 256 MiB of float32."""


BATCH_CELLS = 128
"""Grids up to this side run the head on all of SAM's heads in one batch (see
:meth:`BayesHead.sample_logits`)."""


HEAD_FORMAT = 1


HEAD = Companion("head", "Bayesian head", "fit one with `napari-active-sam train-head`")
"""A Bayesian head's file: ``NAME.head.pt`` beside its model, or the user's own in the cache."""


class BayesHeadNet(nn.Module):
    """conv3×3 (3→16) + ReLU, conv3×3 (16→16) + ReLU, conv1×1 (16→1), plus SAM's logits.

    ``forward`` takes ``(B, 3, g, g)``: clipped SAM logits and the two click maps.
    """

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
        )
        self.out = nn.Conv2d(hidden, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def hidden(self, inputs: torch.Tensor) -> torch.Tensor:
        """Features ``(B, 16, g, g)`` feeding the final 1×1 convolution."""
        scaled = torch.cat([inputs[:, :1] / 10.0, inputs[:, 1:]], dim=1)
        return self.features(scaled)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """MAP logits ``(B, 1, g, g)``."""
        return inputs[:, :1] + self.out(self.hidden(inputs))


def click_sigma(grid: int) -> float:
    return CLICK_SIGMA * grid / 256


def click_maps(prompts: PromptSet, cells: CellGrid) -> np.ndarray:
    """float32 ``(2, c, c)``: positive and negative click maps on the cells."""
    grid = cells.side
    maps = np.zeros((2, grid, grid), np.float32)
    if not prompts.clicks:
        return maps
    coords, labels = prompts.point_arrays()
    centres = cells.to_cells(coords)
    sigma = click_sigma(grid)
    axis = np.arange(grid, dtype=np.float64)
    # A Gaussian is separable: one outer product of two 1D profiles per click.
    across = np.exp(-((axis[None, :] - centres[:, :1]) ** 2) / (2 * sigma**2))
    down = np.exp(-((axis[None, :] - centres[:, 1:]) ** 2) / (2 * sigma**2))
    for x_profile, y_profile, label in zip(across, down, labels, strict=True):
        maps[0 if label else 1] += np.outer(y_profile, x_profile).astype(np.float32)
    return np.clip(maps, 0, 1)


def head_inputs(cell_logits: Inputs, prompts: PromptSet, cells: CellGrid) -> Inputs:
    """The head's input on acquisition cells: SAM's logits averaged over each cell
    (:meth:`CellGrid.pool`) and clipped, and the two click maps.

    The pooled logits of one head, ``(c, c)``, give float32 ``(3, c, c)`` with ``c`` the
    cells per side; those of M heads, ``(M, c, c)``, give ``(M, 3, c, c)`` (the click maps
    are built once and shared). numpy in, numpy out; a tensor gives a tensor on its device.
    """
    grid = cells.side
    several = np.ndim(cell_logits) == 3
    if isinstance(cell_logits, torch.Tensor):
        logits = cell_logits.float().reshape(-1, 1, grid, grid).clamp(-LOGIT_CLIP, LOGIT_CLIP)
        maps = to_device(click_maps(prompts, cells), logits.device)
        inputs = torch.cat([logits, maps.expand(len(logits), -1, -1, -1)], dim=1)
        return inputs if several else inputs[0]
    pooled = np.asarray(cell_logits, np.float32)
    logits = np.clip(pooled.reshape(-1, 1, grid, grid), -LOGIT_CLIP, LOGIT_CLIP)
    maps = click_maps(prompts, cells)
    inputs = np.concatenate([logits, np.broadcast_to(maps, (len(logits), *maps.shape))], axis=1)
    return inputs if several else inputs[0]


def _cholesky(covariance: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of ``covariance``; a matrix that is only semi-definite (a
    direction without variance, rounding) gets the smallest diagonal jitter, relative to
    its mean variance, that lets it factor."""
    matrix = covariance.double()
    eye = torch.eye(len(matrix), dtype=matrix.dtype)
    scale = float(matrix.diagonal().abs().mean()) or 1.0
    for jitter in (0.0, 1e-12, 1e-10, 1e-8, 1e-6):
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * scale * eye)
        if int(info) == 0:
            return factor.float()
    raise ValueError("its posterior covariance is not positive semi-definite")

@dataclass(eq=False)
class BayesHead(FittedCompanion):
    """A MAP head with its Laplace posterior over the final 1×1 convolution.

    Attributes
    ----------
    net : BayesHeadNet
        MAP weights.
    mean : torch.Tensor
        float32 ``(17,)`` posterior mean (the MAP weights of the last layer, bias last).
    covariance : torch.Tensor
        float32 ``(17, 17)`` posterior covariance (diagonal for the diagonal posterior).
    model_id : str
        :attr:`LoadedModel.model_id` of the model the head was fitted for.
    grid : int
        The model's :func:`acquisition_grid`, which the head works on.
    info : dict
        How it was fitted: structure, prior precision, pixels, steps, losses, wall time.

    Raises
    ------
    ValueError
        If the posterior's sizes do not match the last layer, or it holds values that are
        not finite.
    """

    net: BayesHeadNet
    mean: torch.Tensor
    covariance: torch.Tensor
    model_id: str
    grid: int
    info: dict[str, Any] = field(default_factory=dict)
    companion: ClassVar[Companion] = HEAD

    def __post_init__(self):
        size = sum(p.numel() for p in self.net.out.parameters())
        if self.mean.shape != (size,) or self.covariance.shape != (size, size):
            raise ValueError(
                f"its posterior has mean {tuple(self.mean.shape)} and covariance "
                f"{tuple(self.covariance.shape)}, but the head's last layer has {size} "
                f"parameters: expected ({size},) and ({size}, {size})"
            )
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.covariance).all()):
            raise ValueError("its posterior holds values that are not finite")
        self.net.eval().to(memory_format=torch.channels_last)
        self._scale = _cholesky(self.covariance)
        self._device_net: tuple[torch.device, BayesHeadNet] | None = None

    def check_model(self, model: LoadedModel) -> None:
        """Raise :class:`ModelError` unless the head was fitted for ``model``."""
        model_id = model.model_id
        if model_id != self.model_id:
            raise ModelError(
                f"This Bayesian head was fitted for model {self.model_id}, not "
                f"{model_id}: fit one for this model (the dock's 'Learn from my "
                "annotations', or `napari-active-sam train-head`) or choose the model it was "
                "made for."
            )
        if (grid := acquisition_grid(model)) != self.grid:
            raise ModelError(
                f"This Bayesian head works on a {self.grid}-cell grid, but model "
                f"{model_id} is read on {grid} cells (a head made by an older version): fit "
                "it again with the dock's 'Learn from my annotations' or "
                "`napari-active-sam train-head`."
            )

    def sample_weights(self, samples: int, generator: torch.Generator | None = None):
        """``(K, 17)`` draws from the posterior over the last layer."""
        noise = torch.randn(samples, len(self.mean), generator=generator)
        return self.mean + noise @ self._scale.T

    @torch.inference_mode()
    def sample_logits(
        self,
        inputs: np.ndarray | torch.Tensor,
        samples: int = DEFAULT_SAMPLES,
        generator: torch.Generator | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """K posterior logit maps, one matrix product per input.

        Parameters
        ----------
        inputs : array
            float32 ``(3, c, c)`` from :func:`head_inputs`, or ``(M, 3, c, c)`` for the
            logits of M SAM heads: sample k then refines input ``k mod M``, so the K maps
            sample the mixture of the M heads (uniform over heads, and over the Laplace
            posterior within each).
        samples : int
            K, at least 1; capped at :data:`MAX_SAMPLES` and by :data:`MAX_SAMPLE_VALUES`.
        weights : torch.Tensor, optional
            ``(K, 17)`` draws of :meth:`sample_weights` to use instead of new ones: the same
            posterior samples across slices (one draw of the head is one answer for the
            whole object). ``samples`` is then ignored.

        Returns
        -------
        torch.Tensor
            float32 ``(K, c, c)`` logits.
        """
        if isinstance(inputs, torch.Tensor):
            x = inputs.float()
        else:
            x = torch.from_numpy(np.asarray(inputs, np.float32))
        x = x.reshape(-1, *x.shape[-3:])
        cells = x.shape[-1]
        net = self._net_on(x.device)
        # Drawn on the CPU from ``generator`` wherever the head runs: the same seed gives
        # the same posterior samples on every device.
        if weights is None:
            weights = self.sample_weights(bounded_samples(samples, cells), generator)
        weights = to_device(weights, x.device)
        sampled = x.new_empty(len(weights), cells, cells)
        # Channels-last: several times faster on CPU for convolutions with so few channels.
        # Up to BATCH_CELLS the M inputs share one call (a call's fixed cost dominates
        # there); larger grids go one at a time, which keeps each input's features in cache.
        batch = len(x) if cells <= BATCH_CELLS else 1
        for start in range(0, len(x), batch):
            part = x[start : start + batch].contiguous(memory_format=torch.channels_last)
            features = net.hidden(part)
            for i in range(len(part)):
                m = start + i
                sampled[m :: len(x)] = self._logits(weights[m :: len(x)], features[i], part[i, :1])
        return sampled

    def _net_on(self, device: torch.device) -> BayesHeadNet:
        """The head's network on ``device`` (a copy kept for the next call, off the CPU)."""
        if device.type == "cpu":
            return self.net
        if self._device_net is None or self._device_net[0] != device:
            self._device_net = (device, copy.deepcopy(self.net).to(device))
        return self._device_net[1]

    @staticmethod
    def _logits(weights: torch.Tensor, features: torch.Tensor, offset: torch.Tensor):
        """Logit maps ``(K, h, w)`` of last-layer weights ``(K, 17)`` (bias last) on
        ``(16, h, w)`` features, plus SAM's logits ``(1, h, w)``."""
        _, h, w = features.shape
        flat = features.reshape(len(features), -1)
        logits = torch.addmm(weights[:, -1:] + offset.reshape(1, -1), weights[:, :-1], flat)
        return logits.reshape(len(weights), h, w)

    # ----------------------------------------------------------------------- files

    def save(self, path: Path) -> Path:
        payload = {
            "format": HEAD_FORMAT,
            "state_dict": self.net.state_dict(),
            "mean": self.mean,
            "covariance": self.covariance,
            "model_id": self.model_id,
            "grid": self.grid,
            "info": self.info,
        }
        return HEAD.save(path, payload)

    @classmethod
    def load(cls, path: Path, model: LoadedModel | None = None) -> BayesHead:
        """Read a head saved by :meth:`save` (weights only); check it fits ``model``.

        Raises
        ------
        CheckpointError
            A file that cannot be read, or whose network or posterior does not fit a head
            (a posterior of the wrong size, say); the message names the file.
        ModelError
            A head fitted for another model.
        """
        payload = HEAD.read(path)
        try:
            net = BayesHeadNet()
            net.load_state_dict(payload["state_dict"])
            head = cls(
                net,
                payload["mean"].float(),
                payload["covariance"].float(),
                str(payload["model_id"]),
                int(payload["grid"]),
                dict(payload["info"]),
            )
        except (KeyError, AttributeError, TypeError, ValueError, RuntimeError) as error:
            raise HEAD.damaged(path, error) from None
        if model is not None:
            head.check_model(model)
        return head


def bounded_samples(samples: int, grid: int) -> int:
    """K within [1, :data:`MAX_SAMPLES`] and the memory cap; K < 1 is an error."""
    if int(samples) < 1:
        raise ActiveSamError(f"The number of posterior samples must be at least 1, got {samples}.")
    return int(min(samples, MAX_SAMPLES, max(1, MAX_SAMPLE_VALUES // (grid * grid))))
