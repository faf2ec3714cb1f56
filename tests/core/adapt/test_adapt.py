"""Adaptation: labelled objects, fine-tuning, the DPO loss and stage, and adapter files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_active_sam.core.adapt.adapter import ADAPTER, Adapter
from napari_active_sam.core.adapt.dpo import (
    BETAS,
    align,
    dpo_loss,
    log_likelihoods,
    make_ranker,
    preferences,
    rank_by_iou,
)
from napari_active_sam.core.adapt.finetune import AdaptConfig, finetune, ritm_ious, trained_state
from napari_active_sam.core.adapt.objects import (
    LabelledObject,
    labelled_objects,
    reencoded,
    sized_for,
    split_objects,
)
from napari_active_sam.core.adapt.pipeline import AdaptPlan, adapt
from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE
from napari_active_sam.core.engine.checkpoints import load_model, random_model
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.engine.zoom import ZoomingPredictor
from napari_active_sam.core.errors import ActiveSamError, CheckpointError, ModelError
from napari_active_sam.core.progress import drain
from napari_active_sam.core.prompts import Click, PromptSet
from napari_active_sam.core.quality.estimators import QualityModels

TINY = SMOKE_ARCHITECTURE


@pytest.fixture(scope="module")
def model():
    return random_model(TINY, seed=0)


@pytest.fixture(scope="module")
def scene():
    """Discs and squares on a noisy background: ``(image, labels)``, 160 × 150."""
    rng = np.random.default_rng(4)
    rows, cols = np.mgrid[:160, :150]
    image = rng.normal(0.2, 0.03, (160, 150)).astype(np.float32)
    labels = np.zeros((160, 150), np.int32)
    for label, (r, c) in enumerate([(30, 30), (40, 110), (110, 40), (120, 115), (80, 75)], 1):
        inside = (rows - r) ** 2 + (cols - c) ** 2 < 14**2
        image[inside] = 0.9
        labels[inside] = label
    return image, labels


@pytest.fixture(scope="module")
def objects(model, scene):
    image, labels = scene
    return drain(labelled_objects(model, SliceSource(image), labels, "scene"))


def test_labelled_objects_hold_each_object_on_its_grid(objects, scene):
    _, labels = scene
    assert [obj.where[2] for obj in objects] == [1, 2, 3, 4, 5]
    for obj in objects:
        assert obj.gt.shape == tuple(obj.embedding.original_size) == obj.rgb.shape[:2]
        target = obj.target(TINY.img_size)
        assert target.shape == (TINY.img_size, TINY.img_size) and target.any()
        frame = obj.input_frame(TINY.img_size)
        height, width = obj.embedding.input_size
        assert frame.shape == (TINY.img_size, TINY.img_size, 3)
        assert not frame[height:].any() and not frame[:, width:].any()  # SAM's padding
    assert (labels > 0).sum() == sum(int(obj.gt.sum()) for obj in objects)


def test_an_object_on_a_large_slice_is_cut_out_as_the_annotator_decodes_a_click_on_it(discs):
    # Fine-tuning learns from the window the annotator would decode the object in: the same
    # place and size (a zoom window at the annotator's magnification), or it learns another
    # scale than it is asked at.
    demo = load_model("demo", device="cpu")
    size = 3 * demo.architecture.img_size
    centres = [(200, 230), (500, 610)]
    image, labels = discs(size, centres, 9, seed=2)
    source = SliceSource(image)
    found = drain(labelled_objects(demo, source, labels, "large"))
    # at the model's own magnification: the first of the scales a lone click is tried at
    zooming = ZoomingPredictor(Predictor(demo), image, source.limits(), scales=(1.0,))
    whole = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    for obj, (r, c) in zip(found, centres, strict=True):
        answer = zooming.predict(whole, PromptSet(clicks=(Click(c, r, True),)))
        assert answer.full_size == (size, size)
        assert obj.gt.shape == answer.original_size
        top, left = answer.origin
        height, width = answer.original_size
        np.testing.assert_array_equal(obj.gt, labels[top : top + height, left : left + width]
                                      == obj.where[2])  # fmt: skip


def test_small_objects_are_adapted_on_and_decoded_at_the_zoom_of_their_size(tmp_path, discs):
    demo = load_model("demo", device="cpu")
    centres = [(150, 150), (300, 500), (600, 200), (650, 640)]
    image, labels = discs(3 * demo.architecture.img_size, centres, 7, seed=5)  # 13 px nuclei
    masks = [labels == v for v in range(1, 5)]
    sized = sized_for(demo, masks)
    assert sized.extra["magnify"] == 4 and sized.model_id == demo.model_id
    assert "magnify" not in demo.extra  # the base model is left as it was
    found = drain(labelled_objects(sized, SliceSource(image), labels, "small"))
    side = demo.architecture.img_size // 4
    assert all(obj.gt.shape == (side, side) for obj in found)
    plan = AdaptPlan(stage1=AdaptConfig(steps=1, check_every=1, batch_size=2), stage2=None)
    result = drain(adapt(sized, found, plan=plan))
    assert result.adapter.report["magnify"] == 4
    loaded = Adapter.load(result.adapter.save(tmp_path / "small.adapter.pt"), demo)
    adapted = loaded.apply(demo)  # the base model as loaded, without the zoom
    whole = embed_slice(adapted, SliceSource(image), EmbeddingStore(adapted.encoder_id))
    zooming = ZoomingPredictor(Predictor(adapted), image, SliceSource(image).limits())
    answer = zooming.predict(whole, PromptSet(clicks=(Click(150, 150, True),)))
    assert answer.original_size == (side, side)


def test_objects_of_a_volume_are_sized_on_their_slices(model):
    labels = np.zeros((30, 120, 120), np.int32)
    labels[:, 50:60, 50:60] = 3  # ten pixels across, thirty slices deep
    assert TINY.img_size == 128  # a quarter of the input is 32 pixels: three times, so 4
    assert sized_for(model, [labels]).extra["magnify"] == 4
    assert sized_for(model, [labels[0] > 0]).extra["magnify"] == 4  # a mask reads the same
    assert sized_for(model, []).extra["magnify"] == 2  # nothing labelled: the model's own


def test_a_volume_gives_an_object_per_slice(model):
    volume = np.zeros((3, 40, 40), np.float32)
    labels = np.zeros((3, 40, 40), np.int32)
    volume[:2, 10:30, 10:30], labels[:2, 10:30, 10:30] = 1.0, 7
    found = drain(labelled_objects(model, SliceSource(volume), labels, "v"))
    assert [obj.where[1:] for obj in found] == [((0,), 7), ((1,), 7)]


def test_splitting_needs_two_objects_and_keeps_one_aside(objects):
    rng = np.random.default_rng(0)
    train, held = split_objects(objects, 0.2, rng)
    assert len(held) == 1 and len(train) == 4
    assert {id(o) for o in train}.isdisjoint(id(o) for o in held)
    with pytest.raises(ActiveSamError, match="at least 2 labelled objects"):
        split_objects(objects[:1], 0.2, rng)


def test_fine_tuning_trains_the_decoder_only_and_keeps_the_best_check(model, objects):
    train, held = split_objects(objects, 0.2, np.random.default_rng(0))
    before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    config = AdaptConfig(steps=6, batch_size=2, check_every=2, learning_rate=1e-3, refit=False)
    result = drain(finetune(model, train, held, config))
    for key, value in model.sam.state_dict().items():  # the base model is untouched
        assert torch.equal(value, before[key]), key
    after = result.model.sam.state_dict()
    encoder = [k for k in after if k.startswith("image_encoder.")]
    assert all(torch.equal(after[k], before[k]) for k in encoder)
    assert [h["step"] for h in result.history] == [2, 4, 6][: len(result.history)]
    assert result.after >= result.before
    if result.best_step == 0:  # nothing beat the base: its weights are kept
        assert all(torch.equal(after[k], before[k]) for k in after)
    else:
        assert any(not torch.equal(after[k], before[k]) for k in after if "mask_decoder" in k)
        kept = float(ritm_ious(result.model, held, 3).mean())
        assert kept == pytest.approx(result.after)


def test_the_encoder_trains_when_asked_and_checks_reencode(model, objects):
    train, held = split_objects(objects, 0.2, np.random.default_rng(1))
    config = AdaptConfig(steps=2, batch_size=2, check_every=2, learning_rate=1e-2,
                         train_encoder=True, refit=False)  # fmt: skip
    result = drain(finetune(model, train, held, config))
    state = trained_state(result.model, config.parts)
    assert any(k.startswith("image_encoder.") for k in state)
    again = reencoded(result.model, held)
    assert again[0].base is held[0].embedding
    assert not torch.equal(again[0].embedding.features, held[0].embedding.features) or (
        result.best_step == 0
    )


def test_the_dpo_loss_prefers_the_ranked_order():
    grid = 6
    candidates = torch.stack([torch.zeros(grid, grid) for _ in range(4)])
    candidates[0, :3] = 1  # best covers the top half; the others cover less and less
    candidates[1, :2] = 1
    candidates[2, :1] = 1
    disputed = candidates.amax(0) != candidates.amin(0)
    reference = torch.zeros(1, grid, grid)
    toward_best = torch.where(candidates[0] > 0, 4.0, -4.0)[None]
    toward_worst = -toward_best
    batch = candidates[None], disputed[None]
    assert dpo_loss(reference, reference, *batch) == pytest.approx(np.log(2), abs=1e-6)
    assert dpo_loss(toward_best, reference, *batch) < np.log(2) < dpo_loss(toward_worst,
                                                                           reference, *batch)
    # Only disputed pixels count: changing the logits elsewhere changes nothing.
    elsewhere = toward_best.clone()
    elsewhere[0, 5] = 30.0
    np.testing.assert_allclose(log_likelihoods(elsewhere, *batch),
                               log_likelihoods(toward_best, *batch))  # fmt: skip
    assert BETAS == (1.0, 0.5, -0.5, -1.0)


def test_preferences_rank_candidates_and_alignment_checks_held_out(model, objects):
    held, others = objects[:2], objects[2:]
    prefs = drain(preferences(model, others, rank_by_iou))
    for pref in prefs:
        assert pref.ranked.shape[0] == 4 and pref.disputed.any()
        masks = [(torch.sigmoid(pref.reference) > t).numpy() for t in (0.3, 0.4, 0.5, 0.6)]
        assert sorted(pref.order) == [0, 1, 2, 3]
        assert np.array_equal(pref.ranked[0].numpy() > 0, masks[pref.order[0]])
    if prefs:
        result = drain(align(model, prefs, held, AdaptConfig(steps=2, check_every=1,
                                                             learning_rate=1e-4)))  # fmt: skip
        assert len(result.history) >= 1 and result.after >= result.before


def test_ranking_by_quality_needs_the_quality_models(model, tiny_head):
    with pytest.raises(ActiveSamError, match="quality estimators"):
        make_ranker("quality")
    with pytest.raises(ActiveSamError, match="choose iou or quality"):
        make_ranker("votes")
    ranker = make_ranker("quality", QualityModels(model, tiny_head))
    gt = np.zeros((40, 40), bool)
    gt[10:30, 10:30] = True
    image = np.repeat((gt * 200).astype(np.uint8)[..., None], 3, axis=-1)
    from napari_active_sam.core.engine.embeddings import SliceEncoder

    (embedding,) = SliceEncoder(model).encode([image], ["q"])
    obj = LabelledObject(embedding, gt, image, ("q", (), 1))
    masks = [gt, np.zeros_like(gt), gt.copy(), gt]
    order = ranker(obj, masks)
    assert sorted(order) == [0, 1, 2, 3] and order[-1] == 1  # the empty mask last


def test_an_adapter_round_trips_and_refuses_another_model(tmp_path, model, objects):
    plan = AdaptPlan(stage1=AdaptConfig(steps=2, check_every=1, learning_rate=1e-3),
                     stage2=AdaptConfig(steps=1, check_every=1, refit=False))  # fmt: skip
    result = drain(adapt(model, objects[:3], objects[3:], rank_by_iou, plan))
    adapter = result.adapter
    assert adapter.base_model_id == model.model_id
    assert set(adapter.report) >= {"stage1", "stage2", "labelled", "seconds"}
    assert all(k.split(".")[0] in ("prompt_encoder", "mask_decoder") for k in adapter.state)
    path = adapter.save(tmp_path / "a.adapter.pt")
    loaded = Adapter.load(path, model)
    assert loaded.digest == adapter.digest
    applied = loaded.apply(model)
    assert applied.model_id != model.model_id and applied.extra["base_model_id"] == model.model_id
    for key, value in adapter.state.items():
        assert torch.equal(applied.sam.state_dict()[key], value)
    assert not any(p.requires_grad for p in applied.sam.parameters())
    other = random_model(TINY, seed=9)
    with pytest.raises(ModelError, match="made for model"):
        Adapter.load(path, other)
    assert applied.extra["magnify"] == adapter.report["magnify"] == 2  # the model's own zoom
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="adapt"):
        Adapter.load(damaged)
    wrong = ADAPTER.save(tmp_path / "wrong.pt", {"state": {"image_decoder.x": torch.zeros(1)},
                                                 "base_model_id": model.model_id})  # fmt: skip
    with pytest.raises(CheckpointError, match="damaged"):
        Adapter.load(wrong)


def test_targets_shrink_with_the_frame(objects):
    obj = objects[0]
    full = obj.target(TINY.img_size)
    half = obj.target(TINY.img_size, TINY.img_size // 2)
    assert half.shape == (TINY.img_size // 2,) * 2
    assert abs(half.sum() * 4 - full.sum()) < 0.1 * full.sum()


def test_masks_a_person_ranked_become_preferences_for_another_reference(model, objects):
    from napari_active_sam.core.adapt.dpo import candidates_of, ranked_preferences

    other = random_model(TINY, seed=3)
    found = [candidates_of(model, obj) for obj in objects]
    for candidates in found:
        assert len(candidates.masks) == 4 and candidates.grid.shape[0] == 4
        assert all(m.shape == candidates.obj.gt.shape for m in candidates.masks)
        sizes = [int(m.sum()) for m in candidates.masks]
        assert sizes == sorted(sizes, reverse=True)  # higher thresholds, smaller masks
    ranked = [(c, (3, 2, 1, 0)) for c in found]
    prefs = ranked_preferences(other, ranked)
    disputed = [c for c in found if (c.grid.amax(0) != c.grid.amin(0)).any()]
    assert len(prefs) == len(disputed)
    for pref in prefs:
        own = next(c for c in found if c.obj is pref.obj)
        assert torch.equal(pref.ranked[0], own.grid[3]) and pref.order == (3, 2, 1, 0)
        assert not torch.equal(pref.reference, own.logits)  # the reference's own logits


def test_the_policy_starts_where_the_reference_is_with_clicks_and_boxes(model, objects):
    from napari_active_sam.core.adapt.dpo import _policy_logits, candidates_of
    from napari_active_sam.core.prompts import Click, PromptSet

    boxed = [replace(obj, prompts=PromptSet((Click(20.0, 20.0, True),), box=(5, 5, 40, 40)))
             for obj in objects[:2]]  # fmt: skip
    prefs = []
    for obj in [*boxed, *objects[2:]]:  # a mix of prompt shapes in one batch
        candidates = candidates_of(model, obj)
        pref = candidates.preference((0, 1, 2, 3), candidates.logits)
        if pref is not None:
            prefs.append(pref)
    assert prefs
    with torch.no_grad():
        policy = _policy_logits(model, prefs)
    for row, pref in enumerate(prefs):  # Δ = 0 at the start: the same prompts, the same model
        torch.testing.assert_close(policy[row], pref.reference, atol=1e-4, rtol=1e-4)
