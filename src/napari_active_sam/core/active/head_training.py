"""Fitting the Bayesian head: simulated click sets, MAP training, the Laplace posterior."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..engine.checkpoints import LoadedModel
from ..engine.geometry import CellGrid, acquisition_grid
from ..engine.predictor import Predictor
from ..engine.store import Embedding
from ..enums import HessianStructure, PriorMethod, parse_option
from ..errors import ActiveSamError
from ..progress import Progress
from ..sim.episode import episode, sam_recipe
from ..sim.sources import on_generated_scenes
from .bayes_head import HIDDEN, BayesHead, BayesHeadNet, head_inputs


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

    One :func:`~napari_active_sam.core.sim.episode.episode` of SAM's interactive recipe
    (:func:`~napari_active_sam.core.sim.episode.sam_recipe`: the first click inside the
    object, later ones into the error of the mask shown, its logits fed back); every step
    gives one example.
    """
    gt = np.asarray(gt, bool)
    if not gt.any():
        return []
    cells = CellGrid.of(predictor.model, embedding)
    target = cells.fractions(gt)
    opening, correct = sam_recipe(gt, rng)
    return [
        HeadExample(head_inputs(cells.pool(step.feedback).numpy(), step.prompts, cells), target)
        for step in episode(predictor, embedding, opening, correct, clicks)
    ]


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of :func:`fit_head`."""

    steps: int = 600
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    structure: HessianStructure = HessianStructure.DIAG
    prior: PriorMethod = PriorMethod.MARGLIK
    fit_pixels: int = 20_000
    """Grid pixels the Laplace posterior is fitted on (a random, balanced subset)."""
    seed: int = 0

    def __post_init__(self):
        structure = parse_option(HessianStructure, self.structure, "posterior structure")
        object.__setattr__(self, "structure", structure)
        object.__setattr__(self, "prior", parse_option(PriorMethod, self.prior, "prior method"))


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


@contextlib.contextmanager
def _without_jit_deprecation():
    """Silence torch's deprecation of ``torch.jit.script``, which laplace-torch's
    dependencies call (asdl as it is imported, torch's forward-mode autodiff as curvlinops
    computes a full Hessian): a user cannot act on it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated",
                                category=FutureWarning)  # fmt: skip
        yield


def laplace_class():
    """laplace-torch's ``Laplace``, imported when a head is fitted (it takes seconds, which
    opening the dock or starting a command should not)."""
    with _without_jit_deprecation():
        from laplace import Laplace
    return Laplace


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
        raise ActiveSamError(
            "No annotated objects to learn from: commit some objects in the dock first, or "
            "give a data set whose masks hold objects."
        )
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
    laplace, fit_pixels = _laplace(pixel_model, features, labels, config, rng)
    covariance = _covariance(laplace, config.structure)
    mean = torch.cat([pixel_model.linear.weight.reshape(-1), pixel_model.linear.bias]).detach()
    info = {
        **{k: str(v) if isinstance(v, StrEnum) else v for k, v in asdict(config).items()},
        "examples": len(examples),
        "fit_pixels": fit_pixels,
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


def _laplace(
    pixel_model: _PixelModel,
    features: torch.Tensor,
    labels: torch.Tensor,
    config: HeadConfig,
    rng: np.random.Generator,
) -> tuple[Any, int]:
    """laplace-torch's posterior over the last layer, its prior precision chosen by
    ``config.prior`` (a fifth of the pixels held out for the grid search); and the number
    of pixels it was fitted on."""
    order = torch.as_tensor(rng.permutation(len(labels)))
    features, labels = features[order], labels[order]
    held_out = max(1, len(labels) // 5) if config.prior == PriorMethod.GRIDSEARCH else 0
    fit_set = TensorDataset(features[held_out:], labels[held_out:])
    laplace = laplace_class()(
        pixel_model,
        "classification",
        subset_of_weights="all",
        hessian_structure=config.structure.value,
    )
    with _without_jit_deprecation():
        laplace.fit(DataLoader(fit_set, batch_size=4096))
    with warnings.catch_warnings():
        # laplace-torch reminds callers of its own predictive's link; samples are drawn here.
        warnings.filterwarnings("ignore", message="By default `link_approx`")
        if config.prior == PriorMethod.MARGLIK:
            laplace.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=200)
        else:
            validation = DataLoader(TensorDataset(features[:held_out], labels[:held_out]), 4096)
            laplace.optimize_prior_precision(
                pred_type="glm", method="gridsearch", val_loader=validation, progress_bar=False
            )
    return laplace, int(len(fit_set))


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
    """Simulated click sets on freshly generated scenes (the shipped model's head data);
    ``kind`` a :class:`~napari_active_sam.core.enums.SceneKind` or ``"all"``."""
    predictor = Predictor(model)

    def simulate(rgb, embedding, gt, rng):
        return simulate_examples(predictor, embedding, gt, rng, clicks)

    return (
        yield from on_generated_scenes(model, images, seed, kind, objects_per_image, simulate)
    )
