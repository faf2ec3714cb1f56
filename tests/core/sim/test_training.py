"""The interactive training recipe on a tiny SAM: losses, clicks and a real improvement."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_active_sam.core.engine.architectures import DEMO_ARCHITECTURE, MAX_DEPTH
from napari_active_sam.core.engine.checkpoints import LoadedModel, load_checkpoint
from napari_active_sam.core.errors import ActiveSamError, CheckpointError
from napari_active_sam.core.prompts import Click, PromptSet
from napari_active_sam.core.sim.clicker import error_click
from napari_active_sam.core.sim.resumable import resume_path
from napari_active_sam.core.sim.training import (
    DemoTrainingConfig,
    _learning_rate,
    click_loss,
    decode_batch,
    dice_loss,
    encode_batch,
    focal_loss,
    interactive_loss,
    make_batch,
    sample_target,
    train_demo_model,
)


def test_losses_are_small_for_right_and_large_for_wrong_logits():
    target = torch.zeros(1, 8, 8)
    target[:, 2:6, 2:6] = 1
    right, wrong = (target * 2 - 1) * 10, (1 - target * 2) * 10
    assert focal_loss(right, target).item() < 1e-4 < focal_loss(wrong, target).item()
    assert dice_loss(right, target).item() < 0.01 and dice_loss(wrong, target).item() > 0.9


def test_the_click_loss_is_small_where_every_head_takes_the_clicks_in():
    logits = torch.full((2, 3, 8, 8), -8.0)  # every head outside everywhere
    logits[:, :, 2:5, 2:5] = 8.0  # but inside this square
    logits[1, 2, 3, 3] = -8.0  # session 1's third head leaves the square's centre out
    prompts = [
        PromptSet((Click(3.0, 3.0, True), Click(6.4, 1.0, False))),
        # x 2.6 falls in column 3, y 4.6 in row 5 (outside the square)
        PromptSet((Click(2.6, 3.0, True), Click(3.0, 4.6, False))),
    ]
    loss = click_loss(logits, prompts)
    assert loss.shape == (2, 3)
    assert loss[0].max() < 1e-3 and loss[1, :2].max() < 1e-3
    assert loss[1, 2] > 3.9  # one of its two clicks left out by a margin of 8
    assert (click_loss(logits, [PromptSet(box=(0, 0, 4, 4))] * 2) == 0).all()


def test_the_click_loss_weighs_into_a_session_when_asked(tiny_arch):
    rng_seed, config = 4, DemoTrainingConfig(batch_size=2, size=tiny_arch.img_size)
    batch = make_batch(np.random.default_rng(rng_seed), config, "nuclei")
    model = LoadedModel(tiny_arch.build().eval(), "tiny", tiny_arch, "x")
    embeddings = encode_batch(model, batch.images).detach()

    def session(weight):
        loss, _ = interactive_loss(model, embeddings, batch.targets, batch.regions, False, 3,
                                   np.random.default_rng(5), click_weight=weight)  # fmt: skip
        return loss.item()

    # random weights leave clicks out: the loss grows with the weight, the same clicks drawn
    without, once, twice = session(0.0), session(1.0), session(2.0)
    assert without < once < twice
    assert twice - once == pytest.approx(once - without, rel=1e-4)


@pytest.mark.parametrize("weight", [-0.5, float("nan")])
def test_a_click_weight_below_zero_or_not_finite_is_a_clear_error(weight):
    with pytest.raises(ActiveSamError, match="click_weight must be a finite number"):
        DemoTrainingConfig(click_weight=weight)


def test_error_click_lands_in_the_error_region_with_the_right_sign():
    rng = np.random.default_rng(0)
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    pred = np.zeros_like(gt)
    pred[5:15, 5:10] = True
    pred[0:3, 0:3] = True
    for _ in range(20):
        row, col, positive = error_click(gt, pred, np.zeros_like(gt), rng)
        assert (gt ^ pred)[row, col] and positive == gt[row, col]


def test_batched_decoding_matches_sams_own_decoder_per_image(tiny_model):
    sam = tiny_model.sam
    torch.manual_seed(0)
    grid = sam.prompt_encoder.image_embedding_size
    embeddings = torch.randn(3, sam.prompt_encoder.embed_dim, *grid)
    size = tiny_model.architecture.img_size
    points = (torch.rand(3, 2, 2) * size, torch.tensor([[1, 0], [1, 1], [0, 1]]))
    masks = torch.randn(3, 1, *sam.prompt_encoder.mask_input_size)
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=points, boxes=None, masks=masks)
        image_pe = sam.prompt_encoder.get_dense_pe()
        low_res, iou = decode_batch(sam.mask_decoder, embeddings, image_pe, sparse, dense)
        for b in range(3):
            own, own_iou = sam.mask_decoder.predict_masks(
                embeddings[b : b + 1], image_pe, sparse[b : b + 1], dense[b : b + 1]
            )
            torch.testing.assert_close(low_res[b : b + 1], own, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(iou[b : b + 1], own_iou, rtol=1e-4, atol=1e-5)


def test_an_interactive_session_backpropagates_into_every_part(tiny_arch):
    rng = np.random.default_rng(0)
    config = DemoTrainingConfig(batch_size=2, size=tiny_arch.img_size)
    batch = make_batch(rng, config, "nuclei")
    assert batch.images.shape == (2, tiny_arch.img_size, tiny_arch.img_size, 3)
    assert batch.targets.shape == batch.regions.shape == (2, tiny_arch.img_size, tiny_arch.img_size)
    sam = tiny_arch.build().train()
    model = LoadedModel(sam, "tiny", tiny_arch, "x")
    for use_box in (False, True):
        sam.zero_grad()
        loss, stats = interactive_loss(model, encode_batch(model, batch.images), batch.targets,
                                       batch.regions, use_box, 3, rng)  # fmt: skip
        loss.backward()
        assert torch.isfinite(loss) and 0 <= stats["iou_last"] <= 1
        for part in (sam.image_encoder, sam.prompt_encoder, sam.mask_decoder):
            grads = [p.grad for p in part.parameters() if p.requires_grad]
            assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_clicks_simulated_in_threads_are_those_simulated_in_turn(tiny_arch):
    config = DemoTrainingConfig(batch_size=4, size=tiny_arch.img_size)
    batch = make_batch(np.random.default_rng(3), config, "nuclei")
    model = LoadedModel(tiny_arch.build().eval(), "tiny", tiny_arch, "x")
    embeddings = encode_batch(model, batch.images).detach()

    def session(pool, seed=5):
        # The loss of every round depends on where its clicks landed.
        loss, stats = interactive_loss(model, embeddings, batch.targets, batch.regions, False,
                                       4, np.random.default_rng(seed), pool)  # fmt: skip
        return loss.item(), stats

    in_turn = session(None)
    with ThreadPoolExecutor(3) as pool:
        assert session(pool) == in_turn
        assert session(pool, seed=6) != in_turn


@pytest.mark.slow
def test_short_training_improves_and_saves_a_loadable_checkpoint(tiny_arch, tmp_path):
    config = DemoTrainingConfig(steps=60, batch_size=4, size=tiny_arch.img_size,
                                warmup_steps=5, learning_rate=2e-3, click_iterations=2)  # fmt: skip
    steps = train_demo_model(tmp_path / "m.pt", 0, config, tiny_arch, kind="ultrasound")
    messages = [p for p in steps if p.done]
    first = float(messages[0].message.split()[1])
    last = float(messages[-1].message.split()[1])
    assert last < 0.8 * first
    model = load_checkpoint(tmp_path / "m.pt", device="cpu")
    assert model.architecture == tiny_arch and model.extra["steps"] == 60


def test_training_continues_from_a_checkpoint_and_sums_the_stages(tiny_arch, tmp_path):
    config = DemoTrainingConfig(steps=2, batch_size=2, size=tiny_arch.img_size,
                                warmup_steps=1, click_iterations=2)  # fmt: skip
    first = tmp_path / "first.pt"
    list(train_demo_model(first, 0, config, tiny_arch, kind="nuclei"))
    start = load_checkpoint(first, device="cpu")
    second = tmp_path / "second.pt"
    list(train_demo_model(second, 1, config, tiny_arch, kind="nuclei", init=first))
    model = load_checkpoint(second, device="cpu")
    assert model.extra["init_sha256"] == start.weights_sha256
    assert model.extra["total_steps"] == 4 and model.extra["steps"] == 2
    assert model.extra["total_wall_time_s"] > model.extra["wall_time_s"] > 0
    assert model.extra["device"] == "cpu"
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            start.sam.state_dict().values(), model.sam.state_dict().values(), strict=True
        )
    ]
    assert any(changed)
    # A stage that cannot move the weights hands the starting checkpoint on unchanged.
    frozen = tmp_path / "frozen.pt"
    still = replace(config, learning_rate=0.0)
    list(train_demo_model(frozen, 2, still, tiny_arch, kind="nuclei", init=second))
    unchanged = load_checkpoint(frozen, device="cpu").sam.state_dict()
    for key, value in model.sam.state_dict().items():
        assert torch.equal(unchanged[key], value), key


def test_a_share_of_sessions_target_objects_in_proportion_to_their_area():
    """One organ of 2,500 pixels among nine specks of 4: drawn uniformly it is the target
    one session in ten; with ``large=1`` in proportion to its area (98.6 %)."""
    from napari_active_sam.core.data.shapes import Scene
    from napari_active_sam.core.engine.preprocess import IntensityWindow
    from napari_active_sam.core.enums import SceneKind

    labels = np.zeros((80, 80), np.int32)
    labels[10:60, 10:60] = 1
    for i in range(9):
        labels[70:72, 2 + 8 * i : 4 + 8 * i] = i + 2
    scene = Scene(np.zeros((80, 80), np.uint8), labels, IntensityWindow.percentile(),
                  SceneKind.RANDOM)  # fmt: skip

    def organ_share(large: float) -> float:
        rng = np.random.default_rng(0)
        return np.mean([sample_target(scene, rng, large)[0][30, 30] for _ in range(600)])

    assert 0.05 < organ_share(0.0) < 0.16
    assert organ_share(1.0) > 0.95
    assert 0.47 < organ_share(0.5) < 0.62  # half of each: 0.54
    with pytest.raises(ActiveSamError, match="large_targets is a share"):
        DemoTrainingConfig(large_targets=1.5)
    with pytest.raises(ActiveSamError, match="real_fraction is a share"):
        DemoTrainingConfig(real_fraction=-0.2)


@pytest.mark.parametrize("field", ["steps", "batch_size", "click_iterations"])
def test_training_options_below_one_are_a_clear_error(field):
    with pytest.raises(ActiveSamError, match=f"{field} of at least 1"):
        DemoTrainingConfig(**{field: 0})


@pytest.mark.parametrize("rate", [-1e-4, float("nan"), float("inf")])
def test_a_learning_rate_below_zero_or_not_finite_is_a_clear_error(rate):
    with pytest.raises(ActiveSamError, match="learning_rate must be a finite number"):
        DemoTrainingConfig(learning_rate=rate)


def test_the_schedule_peaks_at_the_learning_rate_given():
    config = DemoTrainingConfig(steps=50, learning_rate=2e-4, warmup_steps=10)
    rates = [_learning_rate(step, config) for step in range(50)]
    assert max(rates) == pytest.approx(2e-4) and rates[-1] < 1e-5


@pytest.mark.parametrize("field", ["data_workers", "click_threads"])
def test_negative_worker_counts_are_a_clear_error(field):
    with pytest.raises(ActiveSamError, match=f"{field} cannot be negative"):
        DemoTrainingConfig(**{field: -1})


def test_training_refuses_to_continue_from_another_architecture(tiny_arch, tmp_path):
    first = tmp_path / "first.pt"
    config = DemoTrainingConfig(steps=1, batch_size=2, size=tiny_arch.img_size,
                                warmup_steps=1, click_iterations=1)  # fmt: skip
    list(train_demo_model(first, 0, config, tiny_arch, kind="nuclei"))
    with pytest.raises(CheckpointError, match="architecture"):
        list(train_demo_model(tmp_path / "x.pt", 0, config, DEMO_ARCHITECTURE, init=first))


def test_a_stage_grows_a_shallower_encoder_and_refuses_a_deeper_one(tiny_arch, tmp_path):
    arch = replace(tiny_arch, name="tiny-cnn", encoder="cnn", encoder_global_attn_indexes=())
    config = DemoTrainingConfig(steps=1, batch_size=2, size=arch.img_size, warmup_steps=1,
                                click_iterations=1)  # fmt: skip
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    list(train_demo_model(first, 0, config, arch, kind="nuclei"))
    deeper = replace(config, encoder_depth=arch.encoder_depth + 2)
    list(train_demo_model(second, 1, deeper, arch, kind="nuclei", init=first))
    grown = load_checkpoint(second)
    assert grown.architecture.encoder_depth == arch.encoder_depth + 2
    assert grown.extra["init_encoder_depth"] == arch.encoder_depth
    assert grown.extra["total_steps"] == 2
    with pytest.raises(CheckpointError, match="at most 2 encoder blocks"):
        list(train_demo_model(tmp_path / "x.pt", 2, config, arch, kind="nuclei", init=second))


def test_a_stage_with_a_frozen_encoder_trains_the_decoder_alone(tiny_arch, tmp_path):
    config = DemoTrainingConfig(steps=2, batch_size=2, size=tiny_arch.img_size,
                                warmup_steps=1, click_iterations=2)  # fmt: skip
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    list(train_demo_model(first, 0, config, tiny_arch, kind="nuclei"))
    frozen = replace(config, freeze_encoder=True)
    list(train_demo_model(second, 1, frozen, tiny_arch, kind="nuclei", init=first))
    before = load_checkpoint(first).sam.state_dict()
    after = load_checkpoint(second).sam.state_dict()
    moved = {key for key, value in after.items() if not torch.equal(before[key], value)}
    assert moved and all(key.startswith(("mask_decoder.", "prompt_encoder.")) for key in moved)
    assert any(key.startswith("mask_decoder.") for key in moved)
    with pytest.raises(ActiveSamError, match="frozen encoder cannot grow"):
        DemoTrainingConfig(freeze_encoder=True, encoder_depth=2)


@pytest.mark.parametrize("depth", [0, MAX_DEPTH + 1])
def test_an_encoder_depth_out_of_range_is_a_clear_error(depth):
    with pytest.raises(ActiveSamError, match="encoder_depth must be 1 to"):
        DemoTrainingConfig(encoder_depth=depth)


def test_a_killed_run_resumes_from_its_last_state(tiny_arch, tmp_path):
    config = DemoTrainingConfig(steps=4, batch_size=2, size=tiny_arch.img_size, warmup_steps=1,
                                click_iterations=2, checkpoint_every_s=0)  # fmt: skip
    out = tmp_path / "m.pt"
    run = train_demo_model(out, 0, config, tiny_arch, kind="nuclei")
    for progress in run:
        if progress.message == "resumable state saved at step 2":
            run.close()  # killed here: the state on disk is all that is left
            break
    saved = torch.load(resume_path(out), weights_only=True)
    assert saved["step"] == 2 and not out.exists()
    with pytest.raises(CheckpointError, match="other settings"):
        next(train_demo_model(out, 0, replace(config, steps=5), tiny_arch, kind="nuclei",
                              resume=True))  # fmt: skip
    messages = [p.message for p in train_demo_model(out, 0, config, tiny_arch, kind="nuclei",
                                                    resume=True)]  # fmt: skip
    assert messages[0] == "resumed at step 2" and "saved at step 3" in messages[1]
    model = load_checkpoint(out, device="cpu")
    assert model.extra["steps"] == 4 and model.extra["wall_time_s"] > 0
    assert model.extra["steps_per_s"] > 0 and model.extra["cpu_cores"] >= 1
    assert not resume_path(out).exists()


def test_an_interrupt_keeps_the_steps_done_and_a_finished_model_is_never_overwritten(
    tiny_arch, tmp_path, monkeypatch
):
    """Ctrl+C (KeyboardInterrupt where the run is) writes the resumable state of the steps
    done, long before the next timed save; --resume goes on from there, with other data
    workers or save intervals. Runs that would write over a model or an interrupted run's
    state are refused before training, as is a resume with nothing to resume, and a model
    that cannot be saved where asked is kept elsewhere."""
    from napari_active_sam.core.errors import SaveError

    config = DemoTrainingConfig(steps=4, batch_size=2, size=tiny_arch.img_size, warmup_steps=1,
                                click_iterations=1, checkpoint_every_s=3600)  # fmt: skip
    out = tmp_path / "m.pt"
    with pytest.raises(ActiveSamError, match="Nothing to resume: .* was never started"):
        next(train_demo_model(out, 0, config, tiny_arch, kind="nuclei", resume=True))
    run = train_demo_model(out, 0, config, tiny_arch, kind="nuclei")
    next(run)  # the first report comes after step 1 at the latest
    with pytest.raises(KeyboardInterrupt):
        run.throw(KeyboardInterrupt)
    assert torch.load(resume_path(out), weights_only=True)["step"] >= 1 and not out.exists()
    with pytest.raises(ActiveSamError, match="interrupted run .* --resume continues it"):
        next(train_demo_model(out, 0, config, tiny_arch, kind="nuclei"))
    faster = replace(config, checkpoint_every_s=60, click_threads=2)
    messages = [p.message for p in train_demo_model(out, 0, faster, tiny_arch, kind="nuclei",
                                                    resume=True)]  # fmt: skip
    assert messages[0].startswith("resumed at step") and out.is_file()
    trained = out.read_bytes()
    with pytest.raises(ActiveSamError, match="exists: choose a new --out, or .*--overwrite"):
        next(train_demo_model(out, 0, config, tiny_arch, kind="nuclei"))
    with pytest.raises(ActiveSamError, match="Nothing to resume: .* is a finished model"):
        next(train_demo_model(out, 0, config, tiny_arch, kind="nuclei", resume=True))
    with pytest.raises(ActiveSamError, match="is a folder"):
        next(train_demo_model(tmp_path, 0, config, tiny_arch, kind="nuclei"))
    assert out.read_bytes() == trained

    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "a_file").write_text("")
    blocked = tmp_path / "a_file" / "m.pt"  # its folder cannot be made
    with pytest.raises(SaveError, match="it is kept in") as kept:
        list(train_demo_model(blocked, 0, replace(config, steps=1), tiny_arch, kind="nuclei"))
    spare = str(kept.value).split("it is kept in ")[1].split(":")[0]
    assert load_checkpoint(spare, device="cpu").extra["steps"] == 1


@pytest.mark.slow
def test_scenes_made_by_a_data_worker_process(tiny_arch, tmp_path):
    config = DemoTrainingConfig(steps=2, batch_size=2, size=tiny_arch.img_size, warmup_steps=1,
                                click_iterations=2, data_workers=1)  # fmt: skip
    list(train_demo_model(tmp_path / "m.pt", 0, config, tiny_arch, kind="nuclei"))
    assert load_checkpoint(tmp_path / "m.pt", device="cpu").extra["config"]["data_workers"] == 1
