"""Stage 1: fine-tune the prompt encoder and mask decoder on the user's labelled objects.

The interactive recipe of SAM's own training (focal + Dice 20:1 on every head, the best
multimask head counted, the IoU head by mean squared error, corrective clicks into the
error of the mask shown), run on cached embeddings: the image encoder stays frozen, so a
ViT adapts on a CPU. Training stops early when the objects held out stop improving; the
weights of the best check are kept, the base weights when nothing beat them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..engine.checkpoints import LoadedModel
from ..engine.embeddings import SliceEncoder
from ..engine.predictor import Predictor
from ..errors import ActiveSamError
from ..metrics import iou
from ..progress import Progress
from ..sim.clicker import ritm_next_click
from ..sim.episode import Step, clicks_to_prompts, episode
from ..sim.training import encode_batch, interactive_loss
from .objects import LabelledObject

LOSS_SIDE = 256
"""The loss is taken on masks of at most this side (SAM's own low-resolution grid at 1024
px): a ViT's 1024² frame would make each step several times slower for the same masks."""
CHECK_CLICKS = 3
"""Clicks per held-out object in a check: the mean IoU over the first three decides."""
TRAINED = ("prompt_encoder", "mask_decoder")
"""The parts of SAM adaptation always trains."""
ENCODER = "image_encoder"
"""Trained too when asked (a small encoder, such as the demo model's, adapts on a CPU)."""


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of one adaptation stage.

    Attributes
    ----------
    steps : int
        At most this many optimiser steps.
    batch_size : int
        Objects per step.
    learning_rate : float
        AdamW learning rate.
    clicks : int
        Prompts per simulated training session (stage 1).
    check_every : int
        Steps between checks on the held-out objects.
    patience : int
        Checks without improvement before stopping.
    train_encoder : bool
        Train the image encoder too (stage 1; from the images, not cached embeddings).
    refit : bool
        Once the held-out checks have chosen the number of steps, train again from the
        start on every object, held-out ones included, for that many steps (stage 1).
    seed : int
    """

    steps: int = 200
    batch_size: int = 4
    learning_rate: float = 5e-5
    clicks: int = 1
    check_every: int = 10
    patience: int = 5
    train_encoder: bool = False
    refit: bool = True
    seed: int = 0

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts of SAM this stage trains."""
        return (*TRAINED, ENCODER) if self.train_encoder else TRAINED

    def __post_init__(self):
        for name in ("steps", "batch_size", "clicks", "check_every", "patience"):
            if getattr(self, name) < 1:
                raise ActiveSamError(f"Adapting needs {name} of at least 1, got "
                                     f"{getattr(self, name)}.")  # fmt: skip
        if not self.learning_rate > 0:
            raise ActiveSamError(f"The learning rate must be positive, got {self.learning_rate}.")


@dataclass
class StageResult:
    """What one stage made: the model to use next and how the checks went.

    Attributes
    ----------
    model : LoadedModel
        The adapted model (the input model's weights when no check beat them).
    before, after : float
        Mean IoU over the first :data:`CHECK_CLICKS` RITM clicks on the held-out
        objects, with the stage's starting weights and with the weights kept.
    best_step : int
        The step whose weights were kept (0: the starting weights).
    steps : int
        Steps run.
    history : list of dict
        ``{"step", "loss", "held_out"}`` per check.
    refitted : int
        Objects the kept weights were trained on again after the checks (0: none; the
        held-out figures were measured before).
    """

    model: LoadedModel
    before: float
    after: float
    best_step: int
    steps: int
    history: list[dict] = field(default_factory=list)
    refitted: int = 0


def ritm_ious(model: LoadedModel, objects: Sequence[LabelledObject], clicks: int,
              reencode: bool = False) -> np.ndarray:  # fmt: skip
    """IoU of the mask shown after each of ``clicks`` RITM clicks, per object:
    ``(objects, clicks)`` (the last repeated when nothing is left to click). With
    ``reencode`` the objects' images are encoded by ``model`` (an adapted encoder) instead
    of read from their cached embeddings."""
    predictor = Predictor(model)
    encoder = SliceEncoder(model) if reencode else None
    scores = np.zeros((len(objects), clicks))
    for row, obj in enumerate(objects):
        opening = ritm_next_click(obj.gt, np.zeros_like(obj.gt))
        assert opening is not None  # objects are never empty
        embedding = encoder.encode([obj.rgb], ["check"])[0] if encoder else obj.embedding

        def correct(step: Step, gt=obj.gt) -> list:
            found = ritm_next_click(gt, step.shown, step.clicked)
            return [found] if found else []

        values = [iou(obj.gt, step.shown) for step in
                  episode(predictor, embedding, clicks_to_prompts([opening]), correct, clicks)]
        scores[row] = values + [values[-1]] * (clicks - len(values))  # fmt: skip
    return scores


def trainable(model: LoadedModel, parts: Sequence[str] = TRAINED
              ) -> tuple[LoadedModel, list[torch.nn.Parameter]]:  # fmt: skip
    """A copy of ``model`` in which ``parts`` train (the rest frozen), and their parameters."""
    copied = copy.copy(model)
    copied.sam = copy.deepcopy(model.sam)
    copied.sam.requires_grad_(False)
    params = []
    for part in parts:
        module = getattr(copied.sam, part)
        module.requires_grad_(True)
        params += list(module.parameters())
    return copied, params


def trained_state(model: LoadedModel, parts: Sequence[str] = TRAINED) -> dict[str, torch.Tensor]:
    """The weights of ``parts``, as ``Sam.state_dict`` keys → CPU tensors."""
    return {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items()
            if k.split(".")[0] in parts}  # fmt: skip


def _augmented(frames: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """``(B, S, S, ...)`` frames turned ``turns`` quarter turns, then mirrored."""
    frames = np.rot90(frames, turns, axes=(1, 2))
    return np.ascontiguousarray(frames[:, :, ::-1] if flip else frames)


def run_stage(
    model: LoadedModel,
    held_out: Sequence[LabelledObject],
    config: AdaptConfig,
    loss_of_batch: Callable[[LoadedModel, np.random.Generator], tuple[torch.Tensor, float]],
    title: str,
    keep_last: bool = False,
) -> Generator[Progress, None, StageResult]:
    """The loop both stages share: steps of ``loss_of_batch``, checks on ``held_out`` every
    :attr:`AdaptConfig.check_every` steps, early stopping, the best weights kept (the last
    ones with ``keep_last``)."""
    rng = np.random.default_rng(config.seed)  # clicks and batches; the networks draw nothing
    adapted, params = trainable(model, config.parts)
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-4)
    reencode = config.train_encoder
    before = float(ritm_ious(model, held_out, CHECK_CLICKS, reencode).mean())
    best, best_step, best_state, waited = before, 0, trained_state(adapted, config.parts), 0
    history: list[dict] = []
    losses: list[float] = []
    step = 0
    for step in range(1, config.steps + 1):
        loss, value = loss_of_batch(adapted, rng)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        losses.append(value)
        if step % config.check_every and step != config.steps:
            yield Progress(step, config.steps, f"{title}: step {step}/{config.steps}")
            continue
        adapted.sam.eval()
        score = float(ritm_ious(adapted, held_out, CHECK_CLICKS, reencode).mean())
        history.append({"step": step, "loss": round(float(np.mean(losses)), 5),
                        "held_out": round(score, 4)})  # fmt: skip
        losses = []
        if score > best or (keep_last and step == config.steps):
            best, best_step, waited = score, step, 0
            best_state = trained_state(adapted, config.parts)
        else:
            waited += 1
        yield Progress(step, config.steps, f"{title}: step {step}/{config.steps}, held-out IoU "
                       f"{before:.3f} → {score:.3f}")  # fmt: skip
        if waited >= config.patience:
            break
    adapted.sam.load_state_dict(best_state, strict=False)
    adapted.sam.requires_grad_(False)
    adapted.sam.eval()
    return StageResult(adapted, before, best, best_step, step, history)


def finetune(
    model: LoadedModel,
    train: Sequence[LabelledObject],
    held_out: Sequence[LabelledObject],
    config: AdaptConfig | None = None,
) -> Generator[Progress, None, StageResult]:
    """Stage 1: the interactive recipe on ``train``, checked on ``held_out``; then, with
    :attr:`AdaptConfig.refit`, the chosen number of steps again on both.

    Raises
    ------
    ActiveSamError
        No object to train on or none to check on.
    """
    config = config or AdaptConfig()
    if not train or not held_out:
        raise ActiveSamError("Fine-tuning needs objects to learn from and objects to check on.")
    result = yield from _fit(model, train, held_out, config)
    if not config.refit or result.best_step == 0:
        return result
    everything = [*train, *held_out]
    again_config = replace(config, steps=result.best_step, check_every=result.best_step)
    again = yield from _fit(model, everything, held_out, again_config, keep_last=True)
    result.model, result.refitted = again.model, len(everything)
    return result


def _fit(
    model: LoadedModel,
    train: Sequence[LabelledObject],
    held_out: Sequence[LabelledObject],
    config: AdaptConfig,
    keep_last: bool = False,
) -> Generator[Progress, None, StageResult]:
    img_size = model.architecture.img_size
    targets = [obj.target(img_size, min(img_size, LOSS_SIDE)) for obj in train]
    images = [obj.input_frame(img_size) for obj in train] if config.train_encoder else None

    def loss_of_batch(adapted: LoadedModel, rng: np.random.Generator):
        chosen = rng.choice(len(train), size=min(config.batch_size, len(train)), replace=False)
        sam = adapted.sam
        batch = np.stack([targets[i] for i in chosen])
        if images is None:
            embeddings = torch.stack([train[i].embedding.features for i in chosen])
            embeddings = embeddings.to(sam.device, torch.float32)
        else:  # the encoder learns too: flips and quarter turns of image and mask alike
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            frames = np.stack([images[i] for i in chosen])
            frames, batch = (_augmented(a, turns, flip) for a in (frames, batch))
            sam.image_encoder.train()
            embeddings = encode_batch(adapted, frames)
        loss, stats = interactive_loss(adapted, embeddings, batch, batch, False, config.clicks,
                                       rng)  # fmt: skip
        return loss, stats["loss"]

    title = "fine-tuning on every object" if keep_last else "fine-tuning"
    return (yield from run_stage(model, held_out, config, loss_of_batch, title, keep_last))
