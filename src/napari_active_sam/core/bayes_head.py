"""The BALD-SAM head: a small Bayesian network on SAM's output that samples masks.

Input, on acquisition cells (:data:`ACQUISITION_CELL`; SAM's own low-resolution grid,
256 × 256, for a 1024 model): one SAM head's logits, averaged over each cell and clipped to
±20, and a positive- and a negative-click map (a Gaussian of σ = 8 cells at a 256-cell grid,
scaled with the grid, per click, summed and clamped to [0, 1]).
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

import time
import warnings
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from laplace import Laplace
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .embeddings import Embedding
from .errors import ActiveSamError, CheckpointError, ModelError
from .models import (
    LoadedModel,
    ModelRef,
    companion_path,
    find_companion,
    read_companion,
    save_companion,
    shipped_companion_path,
    user_companion_path,
)
from .predictor import Predictor, shown_head
from .types import Click, Progress, PromptSet

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
ACQUISITION_CELL = 4
"""The head and the acquisition maps work on cells of about this many model-input pixels:
SAM's own low-resolution grid at 1024 px input (256 × 256 cells). Models with a finer grid
(the 256 px demo model's 128 × 128) average their logits over cells of this size, which keeps
the head's work, its K maps and the peak search the same size relative to the image."""
BATCH_CELLS = 128
"""Grids up to this side run the head on all of SAM's heads in one batch (see
:meth:`BayesHead.sample_logits`)."""
HEAD_FORMAT = 1
HEAD_KIND = "head"
"""Companion-file kind of a Bayesian head: ``NAME.head.pt``."""


class HessianStructure(StrEnum):
    """Laplace posterior structures over the final 1×1 convolution."""

    DIAG = "diag"
    KRON = "kron"
    FULL = "full"


class PriorMethod(StrEnum):
    """How the prior precision is chosen."""

    MARGLIK = "marglik"
    """Maximise the Laplace marginal likelihood on the fit pixels."""
    GRIDSEARCH = "gridsearch"
    """Minimise held-out negative log-likelihood over a grid of precisions."""


# ----------------------------------------------------------------------------- network


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


class _PixelModel(nn.Module):
    """The final 1×1 convolution seen as a per-pixel binary classifier for laplace-torch.

    Input ``(P, 17)``: 16 features and SAM's clipped logit (a fixed offset). Output ``(P, 2)``
    logits ``[0, f]`` so that softmax cross-entropy is the Bernoulli likelihood of ``f``.
    """

    def __init__(self, out: nn.Conv2d):
        super().__init__()
        self.linear = nn.Linear(out.in_channels, 1)
        with torch.no_grad():
            self.linear.weight.copy_(out.weight.reshape(1, -1))
            self.linear.bias.copy_(out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.linear(x[:, :-1]) + x[:, -1:]
        return torch.cat([torch.zeros_like(f), f], dim=1)


# ------------------------------------------------------------------------------ inputs


def acquisition_stride(model: LoadedModel) -> int:
    """Low-resolution grid pixels per acquisition cell side (1 for SAM at 1024 px)."""
    grid, img_size = model.architecture.low_res_size, model.architecture.img_size
    stride = max(1, round(ACQUISITION_CELL * grid / img_size))
    return stride if grid % stride == 0 else 1


def acquisition_grid(model: LoadedModel) -> int:
    """Side of the grid of acquisition cells: the head's grid."""
    return model.architecture.low_res_size // acquisition_stride(model)


def cell_logits(logits: np.ndarray | torch.Tensor, model: LoadedModel) -> torch.Tensor:
    """Low-resolution logits ``(..., g, g)`` averaged over acquisition cells."""
    logits = torch.as_tensor(np.asarray(logits, np.float32))
    stride = acquisition_stride(model)
    if stride == 1:
        return logits
    shape = logits.shape[:-2]
    pooled = F.avg_pool2d(logits.reshape(-1, 1, *logits.shape[-2:]), stride)
    return pooled.reshape(*shape, *pooled.shape[-2:])


def click_sigma(grid: int) -> float:
    return CLICK_SIGMA * grid / 256


def _scales(original_size: tuple[int, int], img_size: int) -> np.ndarray:
    """``(sx, sy)``: input pixels per original pixel after ResizeLongestSide."""
    height, width = original_size
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(height, width, img_size)
    return np.array([new_w / width, new_h / height])


def image_to_grid(
    xy: np.ndarray, original_size: tuple[int, int], img_size: int, grid: int
) -> np.ndarray:
    """Image pixel ``(x, y)`` → grid ``(gx, gy)``, pixel centres to pixel centres; ``(N, 2)``."""
    scale = _scales(original_size, img_size) * grid / img_size
    return (np.asarray(xy, np.float64) + 0.5) * scale - 0.5


def grid_to_image(
    gxy: np.ndarray, original_size: tuple[int, int], img_size: int, grid: int
) -> np.ndarray:
    """Inverse of :func:`image_to_grid`, clipped to the image: grid → pixel ``(x, y)``."""
    height, width = original_size
    scale = _scales(original_size, img_size) * grid / img_size
    xy = (np.asarray(gxy, np.float64) + 0.5) / scale - 0.5
    return np.clip(xy, 0, [width - 1, height - 1])


def click_maps(
    prompts: PromptSet, original_size: tuple[int, int], img_size: int, grid: int
) -> np.ndarray:
    """float32 ``(2, g, g)``: positive and negative click maps on the grid."""
    maps = np.zeros((2, grid, grid), np.float32)
    if not prompts.clicks:
        return maps
    coords, labels = prompts.point_arrays()
    centres = image_to_grid(coords, original_size, img_size, grid)
    sigma = click_sigma(grid)
    axis = np.arange(grid, dtype=np.float64)
    # A Gaussian is separable: one outer product of two 1D profiles per click.
    across = np.exp(-((axis[None, :] - centres[:, :1]) ** 2) / (2 * sigma**2))
    down = np.exp(-((axis[None, :] - centres[:, 1:]) ** 2) / (2 * sigma**2))
    for x_profile, y_profile, label in zip(across, down, labels, strict=True):
        maps[0 if label else 1] += np.outer(y_profile, x_profile).astype(np.float32)
    return np.clip(maps, 0, 1)


def head_inputs(
    logits: np.ndarray, prompts: PromptSet, embedding: Embedding, model: LoadedModel
) -> np.ndarray:
    """The head's input on acquisition cells: SAM's logits averaged over each cell and
    clipped, and the two click maps.

    ``logits`` of one head at the low-resolution grid, ``(g, g)``, give float32
    ``(3, c, c)`` with ``c`` the :func:`acquisition_grid`; the logits of M heads,
    ``(M, g, g)``, give ``(M, 3, c, c)`` (the click maps are built once and shared).
    """
    grid = acquisition_grid(model)
    several = np.ndim(logits) == 3
    pooled = cell_logits(logits, model).numpy()
    logits = np.clip(pooled.reshape(-1, 1, grid, grid), -LOGIT_CLIP, LOGIT_CLIP)
    maps = click_maps(prompts, embedding.original_size, model.architecture.img_size, grid)
    inputs = np.concatenate([logits, np.broadcast_to(maps, (len(logits), *maps.shape))], axis=1)
    return inputs if several else inputs[0]


def grid_fractions(
    mask: np.ndarray, input_size: tuple[int, int], img_size: int, grid: int
) -> np.ndarray:
    """float32 ``(2, grid, grid)``: the share of each grid cell a mask covers, and the share
    that lies on the image (0 in SAM's padding, which is at the bottom and right).

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` mask of the original slice.
    input_size : tuple of int
        The slice's size after ResizeLongestSide (``Embedding.input_size``).
    img_size : int
        The model's square input side.
    grid : int
        Output grid side (the head's grid of acquisition cells, or the embedding's).
    """
    h, w = input_size
    tensor = torch.as_tensor(np.asarray(mask, np.float32))[None, None]
    resized = F.interpolate(tensor, (h, w), mode="bilinear", align_corners=False)
    stacked = torch.cat([resized, torch.ones_like(resized)], dim=1)
    padded = F.pad(stacked, (0, img_size - w, 0, img_size - h))
    return F.adaptive_avg_pool2d(padded, grid)[0].numpy()


def grid_target(gt: np.ndarray, embedding: Embedding, model: LoadedModel) -> np.ndarray:
    """:func:`grid_fractions` of the object on the head's grid: its target and weight."""
    arch = model.architecture
    return grid_fractions(gt, embedding.input_size, arch.img_size, acquisition_grid(model))


# --------------------------------------------------------------------------- the head


@dataclass(eq=False)
class BayesHead:
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
    """

    net: BayesHeadNet
    mean: torch.Tensor
    covariance: torch.Tensor
    model_id: str
    grid: int
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.net.eval().to(memory_format=torch.channels_last)
        jitter = 1e-9 * torch.eye(len(self.mean))
        self._scale = torch.linalg.cholesky(self.covariance.double() + jitter).float()

    def check_model(self, model: LoadedModel) -> None:
        """Raise :class:`ModelError` unless the head was fitted for ``model``."""
        if model.model_id == self.model_id and acquisition_grid(model) != self.grid:
            raise ModelError(
                f"This Bayesian head works on a {self.grid}-cell grid, but model "
                f"{model.model_id} is read on {acquisition_grid(model)} cells (a head made by "
                "an older version): fit it again with the dock's 'Learn from my annotations' "
                "or `napari-active-sam train-head`."
            )
        if model.model_id != self.model_id:
            raise ModelError(
                f"This Bayesian head was fitted for model {self.model_id}, not "
                f"{model.model_id}: fit one for this model (the dock's 'Learn from my "
                "annotations', or `napari-active-sam train-head`) or choose the model it was "
                "made for."
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

        Returns
        -------
        torch.Tensor
            float32 ``(K, c, c)`` logits.
        """
        x = torch.as_tensor(np.asarray(inputs, np.float32))
        x = x.reshape(-1, *x.shape[-3:])
        cells = x.shape[-1]
        weights = self.sample_weights(bounded_samples(samples, cells), generator)
        sampled = torch.empty(len(weights), cells, cells)
        # Channels-last: several times faster on CPU for convolutions with so few channels.
        # Up to BATCH_CELLS the M inputs share one call (a call's fixed cost dominates
        # there); larger grids go one at a time, which keeps each input's features in cache.
        batch = len(x) if cells <= BATCH_CELLS else 1
        for start in range(0, len(x), batch):
            part = x[start : start + batch].contiguous(memory_format=torch.channels_last)
            features = self.net.hidden(part)
            for i in range(len(part)):
                m = start + i
                sampled[m :: len(x)] = self._logits(weights[m :: len(x)], features[i], part[i, :1])
        return sampled

    @staticmethod
    def _logits(weights: torch.Tensor, features: torch.Tensor, offset: torch.Tensor):
        """Logit maps ``(K, h, w)`` of last-layer weights ``(K, 17)`` (bias last) on
        ``(16, h, w)`` features, plus SAM's logits ``(1, h, w)``."""
        _, h, w = features.shape
        flat = features.reshape(len(features), -1)
        logits = torch.addmm(weights[:, -1:] + offset.reshape(1, -1), weights[:, :-1], flat)
        return logits.reshape(len(weights), h, w)

    def sample(
        self,
        inputs: np.ndarray | torch.Tensor,
        samples: int = DEFAULT_SAMPLES,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """:meth:`sample_logits` as probabilities, ``(K, g, g)``."""
        return torch.sigmoid(self.sample_logits(inputs, samples, generator))

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
        return save_companion(path, HEAD_KIND, payload)

    @classmethod
    def load(cls, path: Path, model: LoadedModel | None = None) -> BayesHead:
        """Read a head saved by :meth:`save` (weights only); check it fits ``model``."""
        remedy = "fit one with `napari-active-sam train-head`"
        payload = read_companion(path, HEAD_KIND, "Bayesian head", remedy)
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
            raise CheckpointError(f"{path} is damaged ({error}): {remedy}.") from None
        if model is not None:
            head.check_model(model)
        return head


def bounded_samples(samples: int, grid: int) -> int:
    """K within [1, :data:`MAX_SAMPLES`] and the memory cap; K < 1 is an error."""
    if int(samples) < 1:
        raise ActiveSamError(f"The number of posterior samples must be at least 1, got {samples}.")
    return int(min(samples, MAX_SAMPLES, max(1, MAX_SAMPLE_VALUES // (grid * grid))))


def head_path(checkpoint: Path) -> Path:
    """Where the head of a model checkpoint lives: next to it, ``NAME.head.pt``."""
    return companion_path(checkpoint, HEAD_KIND)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class HeadExample:
    """One simulated step: head inputs and the grid target (with its on-image weight)."""

    inputs: np.ndarray
    target: np.ndarray


def simulate_examples(
    predictor: Predictor,
    embedding: Embedding,
    gt: np.ndarray,
    rng: np.random.Generator,
    clicks: int = 6,
) -> list[HeadExample]:
    """Click sets on one object, as a user would build them, each with its target.

    The first click goes inside the object, later ones into the error of the mask shown
    (SAM's interactive recipe, :func:`~napari_active_sam.core.training.error_click`), with
    the shown logits fed back. Every step gives one example.
    """
    from .training import click_inside, error_click

    gt = np.asarray(gt, bool)
    if not gt.any():
        return []
    model = predictor.model
    target = grid_target(gt, embedding, model)
    clicked = np.zeros_like(gt)
    row, col = click_inside(gt, rng)
    prompts = PromptSet((Click(float(col), float(row), True),))
    clicked[row, col] = True
    previous = None
    examples = []
    for step in range(clicks):
        prediction = predictor.predict(embedding, prompts, previous)
        head = shown_head(prediction, prompts)
        logits = prediction.low_res_logits[head]
        examples.append(HeadExample(head_inputs(logits, prompts, embedding, model), target))
        if step == clicks - 1:
            break
        shown = prediction.probability(head) > 0.5
        row, col, positive = error_click(gt, shown, clicked, rng)
        clicked[row, col] = True
        prompts = prompts.with_click(Click(float(col), float(row), positive))
        previous = logits
    return examples


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of :func:`fit_head`."""

    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    structure: str = HessianStructure.DIAG
    prior: str = PriorMethod.MARGLIK
    fit_pixels: int = 20_000
    """Grid pixels the Laplace posterior is fitted on (a random, balanced subset)."""
    seed: int = 0


def _pixel_data(
    net: BayesHeadNet, examples: Sequence[HeadExample], count: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, 17)`` features+offset and ``(P,)`` labels of on-image pixels, half of them
    near the target's boundary, where the label is in question."""
    per_example = max(1, count // max(len(examples), 1))
    features, labels = [], []
    with torch.no_grad():
        for start in range(0, len(examples), 64):
            chunk = examples[start : start + 64]
            x = torch.as_tensor(np.stack([e.inputs for e in chunk]))
            hidden = net.hidden(x)
            for i, example in enumerate(chunk):
                fraction, on_image = example.target
                valid = np.flatnonzero(on_image.ravel() > 0.999)
                boundary = valid[np.abs(fraction.ravel()[valid] - 0.5) < 0.5]
                near = rng.choice(boundary, min(len(boundary), per_example // 2), replace=False)
                rest = rng.choice(valid, min(len(valid), per_example - len(near)), replace=False)
                chosen = np.concatenate([near, rest])
                h = hidden[i].reshape(HIDDEN, -1)[:, chosen].T
                offset = x[i, 0].reshape(-1)[chosen, None]
                features.append(torch.cat([h, offset], dim=1))
                labels.append(torch.as_tensor(fraction.ravel()[chosen] >= 0.5).long())
    return torch.cat(features), torch.cat(labels)


def _losses(net: BayesHeadNet, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Mean binary cross-entropy of SAM's logits and of the head's MAP over on-image pixels,
    in chunks of examples (the hidden features of all of them at once can fill the RAM)."""
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(inputs), 64):
            x, target = inputs[start : start + 64], targets[start : start + 64]
            fraction, on_image = target[:, 0:1], target[:, 1:2]
            for i, logits in enumerate((x[:, :1], net(x))):
                totals[i] += F.binary_cross_entropy_with_logits(
                    logits, fraction, weight=on_image, reduction="sum"
                )
            totals[2] += on_image.sum()
    return float(totals[0] / totals[2]), float(totals[1] / totals[2])


def fit_head(
    examples: Sequence[HeadExample],
    model: LoadedModel,
    config: HeadConfig | None = None,
    initial: BayesHead | None = None,
) -> Generator[Progress, None, BayesHead]:
    """MAP-train the head on ``examples``, then fit its Laplace posterior; yield progress.

    Parameters
    ----------
    examples : sequence of HeadExample
        From :func:`simulate_examples`.
    model : LoadedModel
        The model the examples were simulated with.
    config : HeadConfig, optional
    initial : BayesHead, optional
        Start from these MAP weights instead of an identity head (fine-tuning).
    """
    config = config or HeadConfig()
    if len(examples) == 0:
        raise ActiveSamError("No annotated objects to learn from: commit some objects first.")
    try:
        structure = HessianStructure(config.structure)
        prior = PriorMethod(config.prior)
    except ValueError as error:
        raise ActiveSamError(
            f"{error}; choose one of diag/kron/full and marglik/gridsearch."
        ) from None
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = BayesHeadNet()
    if initial is not None:
        net.load_state_dict(initial.net.state_dict())
    inputs = torch.as_tensor(np.stack([e.inputs for e in examples]))
    targets = torch.as_tensor(np.stack([e.target for e in examples]))
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    net.train()
    losses = []
    for step in range(config.steps):
        batch = torch.as_tensor(rng.integers(len(examples), size=config.batch_size))
        fraction, on_image = targets[batch, 0:1], targets[batch, 1:2]
        logits = net(inputs[batch])
        loss = F.binary_cross_entropy_with_logits(logits, fraction, weight=on_image)
        loss = loss * on_image.numel() / on_image.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == config.steps:
            yield Progress(
                step + 1,
                config.steps + 1,
                f"training the Bayesian head: loss {np.mean(losses[-25:]):.4f}",
            )
    net.eval()
    sam_loss, head_loss = _losses(net, inputs, targets)

    yield Progress(config.steps, config.steps + 1, "fitting the Laplace posterior")
    features, labels = _pixel_data(net, examples, config.fit_pixels, rng)
    pixel_model = _PixelModel(net.out)
    order = torch.as_tensor(rng.permutation(len(labels)))
    features, labels = features[order], labels[order]
    held_out = max(1, len(labels) // 5) if prior == PriorMethod.GRIDSEARCH else 0
    fit_set = TensorDataset(features[held_out:], labels[held_out:])
    laplace = Laplace(
        pixel_model,
        "classification",
        subset_of_weights="all",
        hessian_structure=structure.value,
    )
    laplace.fit(DataLoader(fit_set, batch_size=4096))
    with warnings.catch_warnings():
        # laplace-torch reminds callers of its own predictive's link; samples are drawn here.
        warnings.filterwarnings("ignore", message="By default `link_approx`")
        if prior == PriorMethod.MARGLIK:
            laplace.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=200)
        else:
            validation = DataLoader(TensorDataset(features[:held_out], labels[:held_out]), 4096)
            laplace.optimize_prior_precision(
                pred_type="glm", method="gridsearch", val_loader=validation, progress_bar=False
            )
    covariance = _covariance(laplace, structure)
    mean = torch.cat([pixel_model.linear.weight.reshape(-1), pixel_model.linear.bias]).detach()
    info = {
        **{k: str(v) if isinstance(v, StrEnum) else v for k, v in asdict(config).items()},
        "examples": len(examples),
        "fit_pixels": int(len(fit_set)),
        "prior_precision": laplace.prior_precision.detach().reshape(-1).tolist(),
        "log_marginal_likelihood": float(laplace.log_marginal_likelihood().detach()),
        "map_loss": head_loss,
        "sam_loss": sam_loss,
        "wall_time_s": time.perf_counter() - started,
        "torch_version": str(torch.__version__),
    }
    yield Progress(config.steps + 1, config.steps + 1, "Bayesian head ready")
    return BayesHead(
        net, mean.float(), covariance.float(), model.model_id, acquisition_grid(model), info
    )


def _covariance(laplace: Any, structure: HessianStructure) -> torch.Tensor:
    """Dense ``(17, 17)`` covariance in laplace-torch's parameter order (weights, bias)."""
    if structure == HessianStructure.DIAG:
        return torch.diag(laplace.posterior_variance.detach())
    if structure == HessianStructure.KRON:
        return laplace.posterior_precision.to_matrix(exponent=-1).detach()
    return laplace.posterior_covariance.detach()


def examples_from_objects(
    predictor: Predictor,
    pairs: Iterable[tuple[Embedding | Callable[[], Embedding], np.ndarray]],
    rng: np.random.Generator,
    clicks: int = 6,
) -> Generator[Progress, None, list[HeadExample]]:
    """Simulated click sets on each ``(embedding, object mask)`` pair; yield progress.

    An embedding may be given as a function that computes it, so slices are encoded one by
    one, with progress, instead of all before the first click.
    """
    pairs = list(pairs)
    examples: list[HeadExample] = []
    for done, (embedding, mask) in enumerate(pairs, 1):
        if callable(embedding):
            embedding = embedding()
        examples += simulate_examples(predictor, embedding, mask, rng, clicks)
        yield Progress(done, len(pairs), f"simulating clicks on object {done}/{len(pairs)}")
    return examples


def generated_examples(
    model: LoadedModel,
    images: int,
    seed: int,
    kind: str = "mixed",
    clicks: int = 6,
    objects_per_image: int = 4,
) -> Generator[Progress, None, list[HeadExample]]:
    """Simulated click sets on freshly generated scenes (the shipped model's head data)."""
    from .embeddings import SliceEncoder
    from .preprocess import to_sam_rgb
    from .synthetic import make_scene

    rng = np.random.default_rng(seed)
    encoder, predictor = SliceEncoder(model), Predictor(model)
    size = model.architecture.img_size
    examples: list[HeadExample] = []
    for done in range(1, images + 1):
        scene = make_scene(kind, rng, size)
        rgb = to_sam_rgb(scene.image, scene.window.limits(scene.image))
        (embedding,) = encoder.encode([rgb], [f"generated-{seed}-{done}"])
        labels = np.unique(scene.labels[scene.labels > 0])
        for label in rng.permutation(labels)[:objects_per_image]:
            examples += simulate_examples(
                predictor, embedding, scene.object_mask(int(label)), rng, clicks
            )
        yield Progress(done, images, f"simulating clicks on generated image {done}/{images}")
    return examples


# ------------------------------------------------------------------------------ where


def user_head_path(model_id: str) -> Path:
    """Where a head learned from the user's annotations is kept (the model cache)."""
    return user_companion_path(model_id, HEAD_KIND)


def shipped_head_path(ref: ModelRef) -> Path:
    """The head that comes with a model (see :func:`~.models.shipped_companion_path`)."""
    return shipped_companion_path(ref, HEAD_KIND)


def find_head(ref: ModelRef) -> Path | None:
    """The head to use for ``ref``: the user's own if they trained one, else the shipped
    one, else None."""
    for path in (user_head_path(ref.model_id()), shipped_head_path(ref)):
        if path.is_file():
            return path
    return None


def head_for_model(model: LoadedModel, checkpoint: Path | None = None) -> BayesHead | None:
    """The head to use with a loaded model (see :func:`find_head`), or None if it has none.

    Raises
    ------
    ModelError
        A head file found for the model but fitted for other weights.
    """
    path = find_companion(model, HEAD_KIND, checkpoint)
    return BayesHead.load(path, model) if path is not None else None
