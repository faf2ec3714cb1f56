"""Training loops: SAM's interactive recipe for the bundled demo model.

The recipe follows Segment Anything's: the first prompt is a click inside the object or a
box around it; further clicks are sampled from the error region of the current prediction
while the previous low-resolution logits are fed back as the mask prompt. The loss is
focal + Dice (20:1) on the best of the three multimask heads plus the single-mask head, and
mean squared error between the IoU head and each head's true IoU; optionally
(``click_weight``) a term that asks every head to take every click in: the logistic loss
at each clicked pixel (a mask that leaves a correction out costs one pixel in focal + Dice,
however often the user clicked there)."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Generator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, Sam

from ..data.scenes import Scene, make_scene, training_scene
from ..engine.architectures import DEMO_ARCHITECTURE, MAX_DEPTH, Architecture, deepened
from ..engine.checkpoints import LoadedModel, load_checkpoint, save_checkpoint
from ..engine.preprocess import to_sam_rgb
from ..enums import SceneKind
from ..errors import ActiveSamError, CheckpointError
from ..keeping import save_or_keep
from ..progress import Progress
from ..prompts import PromptSet
from .clicker import click_inside, noisy_box
from .episode import Step, clicks_to_prompts, corrections, interaction
from .resumable import check_out, resume_path, resumed_state, save_state_file


@dataclass(frozen=True)
class DemoTrainingConfig:
    """Hyper-parameters of :func:`train_demo_model`.

    ``random_fraction`` of the training scenes are domain-randomised (random label maps,
    intensities, textures and artefacts; see
    :func:`~napari_active_sam.core.data.scenes.training_scene`), the rest are drawn from the
    modality-like kinds; ``real_fraction`` of them are crops of real training images instead
    (:mod:`~napari_active_sam.core.data.real_training`). Every scene is made fresh, by
    ``data_workers`` processes (0: in the training process). The corrective clicks of a
    batch's sessions are simulated by ``click_threads`` threads (0: one after another; the
    distance transforms they spend their time in run outside Python's lock), so that on a
    GPU the CPU keeps pace. A resumable state is written every ``checkpoint_every_s``
    seconds. ``large_targets`` of the sessions target an object drawn in proportion to its
    area, the rest one drawn uniformly (see :func:`sample_target`). ``click_weight`` weighs
    :func:`click_loss` against the mask loss (0: not used). ``encoder_depth`` sets the
    residual blocks of a ``cnn`` image encoder (None: the architecture's own); a stage that
    continues from a shallower checkpoint grows it (:func:`deepened`). ``freeze_encoder``
    trains the prompt encoder and mask decoder only, the image encoder's features kept.
    """

    steps: int = 1400
    batch_size: int = 8
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    click_iterations: int = 8
    box_fraction: float = 0.25
    size: int = 256
    random_fraction: float = 0.5
    real_fraction: float = 0.0
    data_workers: int = 0
    click_threads: int = 0
    checkpoint_every_s: float = 300.0
    large_targets: float = 0.0
    click_weight: float = 0.0
    encoder_depth: int | None = None
    freeze_encoder: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size", "click_iterations"):
            if getattr(self, name) < 1:
                raise ActiveSamError(
                    f"Demo-model training needs {name} of at least 1, got {getattr(self, name)}."
                )
        if not (self.learning_rate >= 0 and math.isfinite(self.learning_rate)):
            raise ActiveSamError(
                f"learning_rate must be a finite number of at least 0, got {self.learning_rate}."
            )
        for name in ("random_fraction", "real_fraction", "large_targets"):
            if not 0 <= getattr(self, name) <= 1:
                raise ActiveSamError(f"{name} is a share, 0 to 1; got {getattr(self, name)}.")
        if not (self.click_weight >= 0 and math.isfinite(self.click_weight)):
            raise ActiveSamError(
                f"click_weight must be a finite number of at least 0, got {self.click_weight}."
            )
        for name in ("data_workers", "click_threads"):
            if getattr(self, name) < 0:
                raise ActiveSamError(f"{name} cannot be negative, got {getattr(self, name)}.")
        if self.encoder_depth is not None and not 1 <= self.encoder_depth <= MAX_DEPTH:
            raise ActiveSamError(
                f"encoder_depth must be 1 to {MAX_DEPTH} blocks, got {self.encoder_depth}."
            )
        if self.freeze_encoder and self.encoder_depth is not None:
            raise ActiveSamError("A frozen encoder cannot grow: leave encoder_depth out.")

    def architecture_of(self, architecture: Architecture) -> Architecture:
        """``architecture`` with this configuration's encoder depth."""
        if self.encoder_depth is None:
            return architecture
        return replace(architecture, encoder_depth=self.encoder_depth)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha=0.25):
    """Sigmoid focal loss averaged over pixels; ``(..., H, W)`` → ``(...)``."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return (weight * ce * (1 - p_t) ** gamma).mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0):
    """Soft Dice loss; ``(..., H, W)`` → ``(...)``."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(-2, -1))
    total = prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
    return 1 - (2 * inter + eps) / (total + eps)


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM's mask loss: 20 × focal + 1 × Dice; ``(..., H, W)`` → ``(...)``."""
    return 20 * focal_loss(logits, target) + dice_loss(logits, target)


def click_loss(logits: torch.Tensor, prompts: list[PromptSet]) -> torch.Tensor:
    """How far each head is from taking each session's clicks in: the logistic loss of its
    logit at the pixel each click falls in (inside for a positive click, outside for a
    negative one), averaged over the clicks; ``(B, M, H, W)`` logits in the clicks' frame
    → ``(B, M)``; zeros for sessions without clicks."""
    batch, heads, rows, cols = logits.shape
    if not prompts[0].clicks:
        return logits.new_zeros((batch, heads))
    coords, labels = zip(*(p.point_arrays() for p in prompts), strict=True)
    xy = torch.as_tensor(np.floor(np.stack(coords) + 0.5), device=logits.device).long()
    x, y = xy[..., 0].clamp(0, cols - 1), xy[..., 1].clamp(0, rows - 1)  # (B, N)
    sign = torch.as_tensor(np.stack(labels), device=logits.device).float() * 2 - 1
    picked = logits[torch.arange(batch, device=logits.device)[:, None], :, y, x]  # (B, N, M)
    return F.softplus(-sign[..., None] * picked.float()).mean(dim=1)


def sample_target(scene: Scene, rng: np.random.Generator,
                  large: float = 0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A target mask of ``scene`` and the region its first click may come from.

    The object is drawn uniformly among the scene's, or with probability ``large`` in
    proportion to its area: in a scene of eighty nuclei and a brain-like organ, a uniform
    draw targets the organ one session in eighty-one. A click inside a child object may
    target the child or its parent (with the child inside): the ambiguity SAM's multimask
    heads are trained to cover.
    """
    count = int(scene.labels.max())
    label = 0
    if large and rng.random() < large:
        areas = np.bincount(scene.labels.ravel(), minlength=count + 1)[1:].astype(float)
        if areas.any():
            label = int(rng.choice(count, p=areas / areas.sum())) + 1
    if not label:
        label = int(rng.integers(1, count + 1))
    own = scene.labels == label
    if label in scene.parents and rng.random() < 0.5:
        return scene.object_mask(scene.parents[label]), own
    has_children = label in scene.parents.values()
    target = scene.object_mask(label, with_children=has_children and rng.random() < 0.5)
    return target, own


@dataclass
class TrainingBatch:
    """One batch of fresh scenes: uint8 ``(B, S, S, 3)`` SAM input, boolean ``(B, S, S)``
    targets and first-click regions, and whether the session opens with a box."""

    images: np.ndarray
    targets: np.ndarray
    regions: np.ndarray
    use_box: bool


def make_batch(rng: np.random.Generator, config: DemoTrainingConfig, kind: str) -> TrainingBatch:
    """A batch of ``config.batch_size`` freshly generated scenes, one target each."""
    images, targets, regions = [], [], []
    for _ in range(config.batch_size):
        if kind == SceneKind.MIXED:
            scene = training_scene(rng, config.size, config.random_fraction,
                                   config.real_fraction)
        else:
            scene = make_scene(kind, rng, config.size)
        target, region = sample_target(scene, rng, config.large_targets)
        images.append(to_sam_rgb(scene.image, scene.window.limits(scene.image)))
        targets.append(target)
        regions.append(region)
    use_box = bool(rng.random() < config.box_fraction)
    return TrainingBatch(np.stack(images), np.stack(targets), np.stack(regions), use_box)


class SceneStream(torch.utils.data.IterableDataset):
    """Endless :class:`TrainingBatch` es; each data worker draws from its own seed stream,
    ``(seed, start, worker)``, so a run (and a run resumed at step ``start``) is repeatable."""

    def __init__(self, config: DemoTrainingConfig, kind: str, seed: int, start: int):
        super().__init__()
        self.config, self.kind, self.seed, self.start = config, kind, seed, start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        rng = np.random.default_rng([self.seed, self.start, worker])
        while True:
            yield make_batch(rng, self.config, self.kind)


def _batches(config: DemoTrainingConfig, kind: str, seed: int, start: int):
    """Batches from ``config.data_workers`` processes (or this one)."""
    stream = SceneStream(config, kind, seed, start)
    if config.data_workers == 0:
        return iter(stream)
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=config.data_workers,
        prefetch_factor=4,
        persistent_workers=False,
        multiprocessing_context="spawn",
    )
    return iter(loader)


def _learning_rate(step: int, config: DemoTrainingConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return float(config.learning_rate * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))


def decode_batch(
    decoder: MaskDecoder,
    embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All of SAM's mask heads for a batch of images with one prompt set each.

    :meth:`MaskDecoder.predict_masks` decodes many prompt sets against *one* image (it
    repeats the embedding per prompt set); training needs one prompt set per image, so the
    same modules are run here in that layout, in one pass for the whole batch.

    Returns
    -------
    low_res : torch.Tensor
        ``(B, 1 + num_multimask_outputs, h, w)`` logits, the single-mask head first.
    iou_pred : torch.Tensor
        ``(B, 1 + num_multimask_outputs)``.
    """
    batch = embeddings.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse), dim=1)
    src = embeddings + dense
    pos_src = image_pe.expand(batch, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    return masks, decoder.iou_prediction_head(iou_token_out)


def encode_batch(model: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """``(B, C, g, g)`` embeddings of uint8 ``(B, S, S, 3)`` images at the model's input
    size, with gradients unless the encoder is frozen."""
    sam = model.sam
    pixels = torch.as_tensor(images, device=sam.device).permute(0, 3, 1, 2).float()
    return model.embed_images(sam.preprocess(pixels))


def interactive_loss(
    model: LoadedModel,
    embeddings: torch.Tensor,
    targets: np.ndarray,
    first_regions: np.ndarray,
    use_box: bool,
    iterations: int,
    rng: np.random.Generator,
    pool: Executor | None = None,
    click_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of an interactive session of ``iterations`` prompts on each of a batch of image
    embeddings (the encoder's output: trained with it, or cached and frozen).

    Parameters
    ----------
    embeddings : torch.Tensor
        ``(B, C, g, g)`` image embeddings.
    targets, first_regions : np.ndarray
        Boolean ``(B, S, S)`` in the model's padded input frame, at its input side or
        smaller (the loss is then taken at that size, and clicks are scaled up to the
        input): target masks, and where the first click may go.
    rng : np.random.Generator
        Draws the opening prompts, and a stream of corrective clicks for each session.
    pool : Executor, optional
        Simulates the sessions' corrective clicks side by side; each session has its own
        random stream, so the clicks do not depend on the pool.
    click_weight : float
        Weight of :func:`click_loss` on every head (0: not computed).
    """
    sam = model.sam
    device = sam.device
    batch, size = targets.shape[0], targets.shape[1]
    scale = model.architecture.img_size / size
    image_pe = sam.prompt_encoder.get_dense_pe()
    target = torch.as_tensor(targets, device=device, dtype=torch.float32)

    if use_box:
        openings = [PromptSet(box=tuple(map(float, noisy_box(t, rng)))) for t in targets]
    else:
        openings = [clicks_to_prompts([(*click_inside(r, rng), True)]) for r in first_regions]
    # One interaction per image, driven in lockstep: each round is decoded for the batch.
    loops = [
        interaction(gt.shape, opening, corrections(gt, stream), iterations)
        for gt, opening, stream in zip(targets, openings, rng.spawn(batch), strict=True)
    ]
    run = map if pool is None else pool.map
    turns = [next(loop) for loop in loops]
    previous = None
    total = torch.zeros((), device=device)
    stats = {"loss": 0.0, "iou_first": 0.0, "iou_last": 0.0}
    for iteration in range(iterations):
        points, boxes = batch_prompts([turn.prompts.scaled(scale) for turn in turns], device)
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=previous)
        low_res, iou_pred = decode_batch(sam.mask_decoder, embeddings, image_pe, sparse, dense)
        logits = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        losses = mask_loss(logits, target[:, None].expand_as(logits))
        with torch.no_grad():
            binary = logits > 0
            inter = (binary & (target[:, None] > 0)).sum(dim=(-2, -1)).float()
            union = (binary | (target[:, None] > 0)).sum(dim=(-2, -1)).float()
            true_iou = inter / union.clamp(min=1)
        step_loss = (losses[:, 1:].min(dim=1).values + losses[:, 0]).mean()
        step_loss = step_loss + F.mse_loss(iou_pred, true_iou)
        if click_weight:
            clicks = click_loss(logits, [turn.prompts for turn in turns])
            step_loss = step_loss + click_weight * clicks.mean()
        total = total + step_loss

        # Feed back what a user would see: SAM's top-rated multimask head after the first
        # prompt, the single-mask head after that.
        if iteration == 0:
            head = iou_pred[:, 1:].argmax(dim=1) + 1
        else:
            head = torch.zeros(batch, dtype=torch.long, device=device)
        chosen = torch.arange(batch, device=device)
        previous = low_res[chosen, head][:, None].detach()
        shown = binary[chosen, head].cpu().numpy()
        chosen_iou = true_iou[chosen, head].mean().item()
        stats["iou_first" if iteration == 0 else "iou_last"] = chosen_iou
        if iteration < iterations - 1:
            turns = list(run(_answer, loops, turns, shown))
    total = total / iterations
    stats["loss"] = float(total.item())
    return total, stats


def _answer(loop: Generator, turn, mask: np.ndarray):
    """The next turn of one session, whose last turn showed ``mask``."""
    return loop.send(Step(turn, mask=mask))


def batch_prompts(
    prompts: list[PromptSet], device: torch.device
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None]:
    """SAM's prompt-encoder inputs for a batch of prompt sets with equally many clicks:
    ``((B, N, 2) coordinates, (B, N) labels)`` or None, and ``(B, 4)`` boxes or None."""
    points = None
    if prompts[0].clicks:
        arrays = [p.point_arrays() for p in prompts]
        points = (
            torch.as_tensor(np.stack([coords for coords, _ in arrays]), device=device),
            torch.as_tensor(np.stack([labels for _, labels in arrays]).astype(np.int64),
                            device=device),
        )  # fmt: skip
    boxes = None
    if prompts[0].box is not None:
        boxes = torch.as_tensor(np.array([p.box for p in prompts], np.float32), device=device)
    return points, boxes


def _device_name(device: torch.device) -> str:
    """``cpu``, or the accelerator's product name (``cuda: NVIDIA H100 80GB HBM3``)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def _starting_point(init: Path | None, architecture: Architecture) -> tuple[Sam | None, dict]:
    """The network training continues from (None: fresh weights, built after seeding) and
    what the checkpoint says of the stages before: its hash, steps and wall time. A
    checkpoint whose image encoder has fewer blocks than ``architecture``'s is grown to it
    (:func:`deepened`)."""
    if init is None:
        return None, {"total_steps": 0, "total_wall_time_s": 0.0}
    start = load_checkpoint(init, device="cpu")
    held = start.architecture
    shallower = (
        isinstance(held, Architecture)
        and replace(held, encoder_depth=architecture.encoder_depth) == architecture
        and held.encoder_depth < architecture.encoder_depth
    )
    if held != architecture and not shallower:
        raise CheckpointError(
            f"{init} holds a {held.name!r} model of another shape; training continues only "
            f"from a checkpoint of the {architecture.name!r} architecture (the same, or with "
            f"at most {architecture.encoder_depth} encoder blocks, which it then grows to)."
        )
    extra = start.extra
    sam = deepened(start.sam, held, architecture.encoder_depth) if shallower else start.sam
    return sam, {
        "init_sha256": start.weights_sha256,
        "init_encoder_depth": held.encoder_depth,
        "total_steps": int(extra.get("total_steps", extra.get("steps", 0))),
        "total_wall_time_s": float(extra.get("total_wall_time_s", extra.get("wall_time_s", 0.0))),
    }


def train_demo_model(
    out: Path,
    seed: int = 0,
    config: DemoTrainingConfig | None = None,
    architecture: Architecture = DEMO_ARCHITECTURE,
    kind: str = SceneKind.MIXED,
    init: Path | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    overwrite: bool = False,
) -> Generator[Progress, None, Path]:
    """Train the demo model on generated scenes; yield progress; save it.

    The checkpoint (written with :func:`~napari_active_sam.core.engine.checkpoints.save_checkpoint`)
    carries its architecture, the seed, the configuration, the step count, the wall time,
    steps per second and the hardware; with ``init`` also the starting checkpoint's hash and
    the steps and wall time summed over every stage.

    Every ``config.checkpoint_every_s`` seconds the network, the optimiser and the step are
    written to :func:`resume_path`; with ``resume`` a run of the same settings continues
    from there (with fresh scenes: the data streams restart at the resumed step). The file
    is removed once the checkpoint is saved.

    Parameters
    ----------
    out : Path
        Checkpoint file to write.
    seed : int
        Seeds the scene generator, the click sampler and torch.
    config : DemoTrainingConfig, optional
        Defaults to :class:`DemoTrainingConfig`.
    kind : str
        ``mixed`` (the training mix, domain-randomised scenes included) or one scene kind.
    init : Path, optional
        Continue from this checkpoint (same architecture) instead of random weights.
    device : str or torch.device
        Where the network trains (the scenes and clicks are made on the CPU); on CUDA the
        forward passes run in bfloat16 autocast.
    resume : bool
        Continue a killed or interrupted run that wrote ``out``'s resumable state (an
        interrupt, Ctrl+C, writes it before it stops).
    overwrite : bool
        Replace an ``out`` that exists (otherwise refused before training).

    Raises
    ------
    ActiveSamError
        Before training: ``out`` exists (without ``overwrite``), an interrupted run's state
        is there (without ``resume``), or ``resume`` finds none.
    SaveError
        ``out`` could not be written once trained; the message names where the model was
        kept instead.
    """
    config = config or DemoTrainingConfig()
    out = Path(out)
    device = torch.device(device)
    check_out(out, resume, overwrite)
    architecture = config.architecture_of(architecture)
    state = resumed_state(out, seed, asdict(config), str(kind)) if resume else None
    start, previous = _starting_point(init, architecture)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])  # clicks and boxes; scenes have their own streams
    sam = (start if start is not None else architecture.build()).to(device).train()
    model = LoadedModel(sam, architecture.name, architecture, "training")
    sam.image_encoder.requires_grad_(not config.freeze_encoder)
    optimizer = torch.optim.AdamW(
        sam.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    first_step, spent = 0, 0.0
    if state is not None:
        sam.load_state_dict(state["sam"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        first_step, spent, previous = state["step"], state["wall_time_s"], state["previous"]
        yield Progress(first_step, config.steps, f"resumed at step {first_step}")
    started = time.perf_counter()
    last_saved = started
    batches = _batches(config, str(kind), seed, first_step)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    history = []
    pool = ThreadPoolExecutor(config.click_threads) if config.click_threads else None
    done = first_step

    def save_state() -> None:
        save_state_file(resume_path(out), {
            "sam": sam.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "seed": seed,
            "config": asdict(config), "kind": str(kind), "previous": previous,
            "wall_time_s": spent + time.perf_counter() - started,
        })  # fmt: skip

    try:
        for step in range(first_step, config.steps):
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, config)
            batch = next(batches)
            with autocast:
                embeddings = encode_batch(model, batch.images)
                loss, stats = interactive_loss(model, embeddings, batch.targets, batch.regions,
                                               batch.use_box, config.click_iterations, rng,
                                               pool, config.click_weight)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
            optimizer.step()
            done = step + 1
            history.append(stats)
            now = time.perf_counter()
            if now - last_saved >= config.checkpoint_every_s and step + 1 < config.steps:
                save_state()
                last_saved = now
                yield Progress(step + 1, config.steps, f"resumable state saved at step {step + 1}")
            if (step + 1) % 10 == 0 or step + 1 == config.steps:
                recent = history[-50:]
                summary = {k: float(np.mean([h[k] for h in recent])) for k in recent[0]}
                rate = (step + 1 - first_step) / (now - started)
                report = "loss {loss:.3f}  IoU first {iou_first:.3f}  last {iou_last:.3f}"
                yield Progress(step + 1, config.steps,
                               report.format(**summary) + f"  {rate:.2f} steps/s")  # fmt: skip
    except KeyboardInterrupt:
        if done > first_step:  # keep what this run learned: --resume goes on from it
            save_state()
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    sam.eval()
    wall_time = spent + time.perf_counter() - started
    save_or_keep(lambda path: save_checkpoint(
        path,
        sam,
        architecture,
        seed=seed,
        steps=config.steps,
        config=asdict(config),
        kind=str(kind),
        wall_time_s=wall_time,
        steps_per_s=config.steps / wall_time if wall_time > 0 else 0.0,
        **{
            **previous,
            "total_steps": previous["total_steps"] + config.steps,
            "total_wall_time_s": previous["total_wall_time_s"] + wall_time,
        },
        torch_version=str(torch.__version__),
        device=_device_name(sam.device),
        threads=torch.get_num_threads(),
        cpu=platform.processor() or platform.machine(),
        cpu_cores=os.cpu_count(),
    ), out, "the trained model")  # fmt: skip
    resume_path(out).unlink(missing_ok=True)
    return out
