"""Ground-truth-free quality: each estimator against clearly wrong masks, on the demo model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_active_sam.core.active.bayes_head import BayesHead
from napari_active_sam.core.data.scenes import make_scene
from napari_active_sam.core.engine.checkpoints import random_model
from napari_active_sam.core.engine.embeddings import SliceEncoder
from napari_active_sam.core.engine.preprocess import IntensityWindow, SliceSource, to_sam_rgb
from napari_active_sam.core.enums import Estimator
from napari_active_sam.core.errors import ActiveSamError, CheckpointError, ImageError, ModelError
from napari_active_sam.core.metrics import dice, iou
from napari_active_sam.core.progress import Progress, drain
from napari_active_sam.core.quality.assess import (
    COLUMNS,
    assess_labels,
    assess_mask,
    quality_rows,
    write_quality_csv,
)
from napari_active_sam.core.quality.estimators import (
    ENSEMBLE_MEMBERS,
    ESTIMATORS,
    QualityModels,
    QualitySample,
    estimate_quality,
    iou_to_dice,
)
from napari_active_sam.core.quality.evaluation import evaluate_estimators, plot_quality
from napari_active_sam.core.quality.features import embedding_features, overlay_crop
from napari_active_sam.core.quality.networks import QualityRegressor
from napari_active_sam.core.quality.training import (
    PERTURBATIONS,
    QualityConfig,
    fit_quality,
    generated_examples,
    perturbed_mask,
)
from napari_active_sam.core.sim.clicker import prompts_from_mask


def _drain(generator):
    steps = []
    return drain(generator, steps.append), steps




@pytest.fixture(scope="module")
def segmentable(demo, ct_scene, full_models):
    """Objects SAM can segment from a box (Dice ≥ 0.85): for those the correct mask is
    known to be the better one; for an object SAM cannot see no estimator can know."""
    scene, rgb, embedding = ct_scene
    chosen = []
    for label in np.unique(scene.labels[scene.labels > 0]):
        gt = scene.object_mask(int(label))
        answer = full_models.predictor.predict(embedding, prompts_from_mask(gt))
        if gt.sum() >= 150 and dice(gt, answer.mask(0)) >= 0.85:
            chosen.append(gt)
    assert len(chosen) >= 3
    return chosen


def _wrong_masks(gt: np.ndarray) -> dict[str, np.ndarray]:
    radius = np.sqrt(gt.sum() / np.pi)
    shift = int(2 * radius) + 3
    shifted = np.zeros_like(gt)
    shifted[:, shift:] = gt[:, :-shift]
    if shifted.sum() < gt.sum() // 2:  # the object sits at the right edge: move it left
        shifted = np.zeros_like(gt)
        shifted[:, :-shift] = gt[:, shift:]
    return {
        "shifted": shifted,
        "eroded": ndimage.binary_erosion(gt, iterations=max(1, int(radius / 2))),
        "empty": np.zeros_like(gt),
        "whole image": np.ones_like(gt),
    }


def test_iou_converts_to_dice():
    assert iou_to_dice(1 / 3) == pytest.approx(0.5)
    assert iou_to_dice(0.0) == 0.0 and iou_to_dice(1.0) == 1.0
    for value in np.linspace(0, 1, 11):
        iou = value / (2 - value)  # IoU from Dice
        assert iou_to_dice(iou) == pytest.approx(value)


@pytest.mark.parametrize("estimator", list(Estimator))
def test_each_estimator_ranks_clearly_wrong_masks_below_the_correct_one(
    estimator, full_models, ct_scene, segmentable
):
    _, rgb, embedding = ct_scene
    for gt in segmentable:
        correct = estimate_quality(estimator, QualitySample(rgb, gt, embedding), full_models)
        assert correct.estimator == estimator and correct.requested == estimator
        assert correct.estimator == correct.requested and correct.note == ""
        assert 0.5 < correct.predicted_dice <= 1.0
        for name, wrong in _wrong_masks(gt).items():
            assert dice(gt, wrong) < 0.6  # clearly wrong indeed
            bad = estimate_quality(estimator, QualitySample(rgb, wrong, embedding), full_models)
            assert 0.0 <= bad.predicted_dice < correct.predicted_dice, (estimator, name)


def test_sams_own_mask_gets_its_iou_heads_estimate_and_a_changed_mask_less(
    full_models, ct_scene, segmentable
):
    _, rgb, embedding = ct_scene
    prompts = prompts_from_mask(segmentable[0])
    prediction = full_models.predictor.predict(embedding, prompts)
    for head in range(4):
        own = QualitySample(rgb, prediction.mask(head), embedding, prompts, prediction, head)
        estimate = estimate_quality("iou_head", own, full_models)
        expected = iou_to_dice(float(np.clip(prediction.iou[head], 0, 1)))
        assert estimate.predicted_dice == pytest.approx(expected, abs=1e-6)
    # An edited mask: SAM's predicted IoU times the edit's agreement with SAM's mask.
    answer = prediction.mask(0)
    edited = answer & ~_wrong_masks(answer)["eroded"]  # a ring only
    ring = QualitySample(rgb, edited, embedding, prompts, prediction, 0)
    agreement = iou(answer, edited)
    assert 0.3 < agreement < 0.95
    expected = iou_to_dice(float(np.clip(prediction.iou[0], 0, 1)) * agreement)
    assert estimate_quality("iou_head", ring, full_models).predicted_dice == pytest.approx(expected)
    # Without SAM's answer, SAM is prompted from the mask itself: a different, lower estimate.
    alone = estimate_quality("iou_head", QualitySample(rgb, edited, embedding), full_models)
    assert alone.predicted_dice < iou_to_dice(float(np.clip(prediction.iou[0], 0, 1)))


def test_posterior_without_a_bayesian_head_falls_back_to_the_iou_head(demo, ct_scene, segmentable):
    _, rgb, embedding = ct_scene
    no_head = QualityModels(demo)
    sample = QualitySample(rgb, segmentable[0], embedding)
    for estimator in (
        Estimator.POSTERIOR,
        Estimator.REGRESSOR,
        Estimator.EMBEDDING,
        Estimator.ENSEMBLE,
    ):
        estimate = estimate_quality(estimator, sample, no_head)
        assert estimate.requested == estimator and estimate.estimator == Estimator.IOU_HEAD
        assert estimate.estimator != estimate.requested
        assert ("Bayesian head" if estimator == "posterior" else "regressor") in estimate.note
        iou_only = estimate_quality("iou_head", sample, no_head)
        assert estimate.predicted_dice == iou_only.predicted_dice


def test_the_ensemble_is_the_mean_of_the_estimators_the_models_have(
    demo, full_models, ct_scene, segmentable
):
    _, rgb, embedding = ct_scene
    sample = QualitySample(rgb, _wrong_masks(segmentable[0])["eroded"], embedding)

    def estimate(estimator, models):
        return estimate_quality(estimator, sample, models, np.random.default_rng(5)).predicted_dice

    members = [estimate(e, full_models) for e in ENSEMBLE_MEMBERS]
    assert len(set(members)) == 4  # four different opinions
    assert estimate("ensemble", full_models) == pytest.approx(np.mean(members))
    head_only = QualityModels(demo, bayes_head=full_models.bayes_head)
    both = [estimate(e, head_only) for e in ("iou_head", "posterior")]
    assert estimate("ensemble", head_only) == pytest.approx(np.mean(both))


def test_the_ensemble_encodes_and_asks_sam_once(
    demo, full_models, ct_scene, segmentable, monkeypatch
):
    _, rgb, _ = ct_scene
    sample = QualitySample(rgb, _wrong_masks(segmentable[0])["eroded"])  # no embedding
    calls = {"predict": 0, "encode": 0}
    predict, encode = full_models.predictor.predict, SliceEncoder.encode

    def counted_predict(*args, **kwargs):
        calls["predict"] += 1
        return predict(*args, **kwargs)

    def counted_encode(self, *args, **kwargs):
        calls["encode"] += 1
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(full_models.predictor, "predict", counted_predict)
    monkeypatch.setattr(SliceEncoder, "encode", counted_encode)
    estimate = estimate_quality("ensemble", sample, full_models)
    assert estimate.estimator == Estimator.ENSEMBLE and 0 < estimate.predicted_dice <= 1
    assert calls == {"predict": 1, "encode": 1}


def test_posterior_differs_from_the_iou_head_and_repeats_with_its_seed(
    full_models, ct_scene, segmentable
):
    _, rgb, embedding = ct_scene
    sample = QualitySample(rgb, _wrong_masks(segmentable[0])["eroded"], embedding)
    first = estimate_quality("posterior", sample, full_models, np.random.default_rng(3))
    again = estimate_quality("posterior", sample, full_models, np.random.default_rng(3))
    iou_only = estimate_quality("iou_head", sample, full_models)
    assert first.predicted_dice == again.predicted_dice
    assert first.predicted_dice != pytest.approx(iou_only.predicted_dice, abs=1e-3)


def test_an_empty_mask_is_predicted_zero_by_every_estimator(full_models, ct_scene):
    _, rgb, embedding = ct_scene
    empty = QualitySample(rgb, np.zeros(rgb.shape[:2], bool), embedding)
    for estimator in Estimator:
        estimate = estimate_quality(estimator, empty, full_models)
        assert estimate.predicted_dice == 0.0 and "empty" in estimate.note
    (only,) = assess_mask("regressor", rgb[..., 0], np.zeros(rgb.shape[:2]), full_models)
    assert only.estimate.predicted_dice == 0.0 and only.index == ()


def test_a_mask_covering_the_whole_image_gets_a_valid_low_estimate(full_models, ct_scene):
    _, rgb, embedding = ct_scene
    whole = QualitySample(rgb, np.ones(rgb.shape[:2], bool), embedding)
    for estimator in Estimator:
        estimate = estimate_quality(estimator, whole, full_models)
        assert estimate.estimator == estimator
        assert 0.0 <= estimate.predicted_dice < 0.5, estimator


def test_a_mask_of_another_shape_than_its_image_is_a_clear_image_error(full_models, ct_scene):
    _, rgb, embedding = ct_scene
    with pytest.raises(ImageError, match="must match their image"):
        QualitySample(rgb, np.ones((10, 10), bool), embedding)
    with pytest.raises(ImageError, match="must match their image"):
        assess_mask("iou_head", rgb[..., 0], np.ones((3, *rgb.shape[:2]), bool), full_models)
    source = SliceSource(rgb[..., 0])
    with pytest.raises(ImageError, match="must match their image"):
        _drain(assess_labels("iou_head", source, np.ones((5, 5), int), full_models))
    with pytest.raises(ImageError, match="non-integer"):
        _drain(assess_labels("iou_head", source, np.full(rgb.shape[:2], 0.5), full_models))
    with pytest.raises(ImageError, match="uint8"):
        QualitySample(rgb.astype(np.float32), np.ones(rgb.shape[:2], bool))
    with pytest.raises(ActiveSamError, match="Unknown quality estimator"):
        estimate_quality("magic", QualitySample(rgb, np.ones(rgb.shape[:2], bool)), full_models)


def test_a_3d_mask_is_judged_slice_by_slice(full_models, demo):
    rng = np.random.default_rng(11)
    scenes = [make_scene("nuclei", rng, demo.architecture.img_size) for _ in range(3)]
    volume = np.stack([s.image for s in scenes])
    label = 1
    mask = np.stack([s.labels == label for s in scenes])
    mask[1] = False  # the object is missing on the middle slice
    with pytest.raises(ImageError, match="slice by slice"):
        QualitySample(to_sam_rgb(volume[0], (0, 1)), mask)
    window = IntensityWindow.percentile()
    for estimator in ("iou_head", "regressor"):
        results = assess_mask(estimator, volume, mask, full_models, window=window)
        assert [r.index for r in results] == [(0,), (2,)]
        limits = window.limits(volume)
        for result in results:
            (z,) = result.index
            sample = QualitySample(to_sam_rgb(volume[z], limits), mask[z])
            alone = estimate_quality(estimator, sample, full_models, np.random.default_rng(0))
            assert result.estimate.predicted_dice == pytest.approx(alone.predicted_dice, abs=1e-5)
            assert result.estimate.estimator == estimator


def test_labels_give_one_row_per_object_and_slice_and_the_csv_columns(full_models, tmp_path):
    scene = make_scene("nuclei", np.random.default_rng(5), 256)
    volume = np.stack([scene.image, scene.image[::-1]])
    labels = np.stack([scene.labels, scene.labels[::-1]])
    labels[1][labels[1] == 2] = 0  # object 2 only on slice 0
    source = SliceSource(volume, scene.window)
    results, steps = _drain(assess_labels("embedding", source, labels, full_models))
    objects = np.unique(scene.labels[scene.labels > 0])
    assert len(results) == 2 * len(objects) - 1 == len(steps)
    assert all(isinstance(s, Progress) for s in steps) and steps[-1].done == steps[-1].total
    assert [(r.label, r.index) for r in results][:3] == [(1, (0,)), (1, (1,)), (2, (0,))]
    path = write_quality_csv(quality_rows("masks/vol.tif", results), tmp_path / "q.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) == "file,label,slice,predicted_dice,estimator"
    values = [float(line.split(",")[3]) for line in lines[1:]]
    assert values == sorted(values) and len(values) == len(results)
    assert all(
        line.startswith("masks/vol.tif,") and line.endswith(",embedding") for line in lines[1:]
    )
    flat = quality_rows(
        "a.tif", assess_mask("iou_head", scene.image, scene.labels == 1, full_models)
    )
    assert flat[0]["slice"] == "" and flat[0]["label"] == 1


def test_the_overlay_crop_puts_the_mask_in_the_red_channel():
    image = np.full((100, 120, 3), 100, np.uint8)
    image[..., 2] = 30
    mask = np.zeros((100, 120), bool)
    mask[40:60, 50:70] = True
    crop = overlay_crop(image, mask, size=64)
    assert crop.shape == (3, 64, 64) and crop.dtype == np.uint8
    centre = crop[:, 28:36, 28:36].astype(int)
    assert (abs(centre[0] - 178) <= 1).all()  # 0.5 · 100 + 0.5 · 255
    assert (centre[1] == 100).all() and (centre[2] == 30).all()
    assert abs(int(crop[0, 2, 2]) - 50) <= 1 and crop[1, 2, 2] == 100  # margin: no mask
    corner = np.zeros((100, 120), bool)
    corner[:10, :10] = True
    padded = overlay_crop(image, corner, size=64)
    assert padded[1, 0, 0] == 0 and padded[1, -1, -1] == 100  # outside the image is black


def test_embedding_features_pool_inside_and_around_the_mask(demo, ct_scene, segmentable):
    _, _, embedding = ct_scene
    channels = embedding.features.shape[0]
    img_size = demo.architecture.img_size
    features = embedding_features(embedding, segmentable[0], img_size)
    assert features.shape == (2 * channels + 4,) and features.dtype == np.float32
    assert np.abs(features[channels : 2 * channels]).sum() > 0
    whole = embedding_features(embedding, np.ones(segmentable[0].shape, bool), img_size)
    assert np.all(whole[channels : 2 * channels] == 0)  # no ring around the whole image
    mean = embedding.features.float().mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(whole[:channels], mean, atol=1e-3)


def test_simulated_prompting_gives_good_and_bad_masks(demo):
    examples, steps = _drain(generated_examples(demo, 2, seed=123, kind="all"))
    assert len(steps) == 2 and steps[-1].done == 2
    dices = np.array([e.dice for e in examples])
    assert dices.min() < 0.2 and dices.max() > 0.9 and dices.std() > 0.2
    origins = {e.origin for e in examples}
    assert {"click-head0", "click-head3", "box-head0"} <= origins
    assert examples[0].crop.shape == (3, 64, 64)
    rng = np.random.default_rng(0)
    gt = np.zeros((50, 50), bool)
    gt[10:30, 15:35] = True
    for kind in PERTURBATIONS:
        changed = perturbed_mask(gt, kind, rng)
        assert changed.shape == gt.shape
        assert (dice(gt, changed) == 1.0) == (kind == "truth")


def test_fit_quality_trains_both_regressors_and_saves_them_for_their_model(demo, tmp_path):
    examples, _ = _drain(generated_examples(demo, 3, seed=321, kind="all"))
    config = QualityConfig(crop_steps=20, feature_steps=300, batch_size=32)
    regressor, steps = _drain(fit_quality(examples, demo, config))
    assert [s.done for s in steps] == sorted(s.done for s in steps)
    assert steps[-1].done == steps[-1].total == 320
    features = np.stack([e.features for e in examples])
    truth = np.array([e.dice for e in examples])
    fitted = regressor.predict_features(features)
    assert np.all((fitted >= 0) & (fitted <= 1))
    assert np.mean((fitted - truth) ** 2) < 0.5 * truth.var()  # far better than a constant
    crops = regressor.predict_crops(np.stack([e.crop for e in examples[:5]]))
    assert crops.shape == (5,) and np.all((crops >= 0) & (crops <= 1))

    path = regressor.save(tmp_path / "demo.quality.pt")
    loaded = QualityRegressor.load(path, demo)
    np.testing.assert_allclose(loaded.predict_features(features), fitted, atol=2e-2)
    assert loaded.info["examples"] == len(examples)
    other = random_model(demo.architecture, seed=1)
    with pytest.raises(ModelError, match="train-quality"):
        QualityRegressor.load(path, other)
    with pytest.raises(ModelError):
        QualityModels(other, regressor=regressor)
    (tmp_path / "junk.pt").write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        QualityRegressor.load(tmp_path / "junk.pt")
    torch.save({"kind": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a napari-active-sam quality"):
        QualityRegressor.load(tmp_path / "other.pt")
    with pytest.raises(ActiveSamError, match="No candidate masks"):
        _drain(fit_quality([], demo))
    with pytest.raises(ActiveSamError, match="5 candidate masks .* needs 20 or more"):
        _drain(fit_quality(examples[:5], demo))
    alike = [replace(e, dice=0.5) for e in examples]
    with pytest.raises(ActiveSamError, match="from 0.50 to 0.50"):
        _drain(fit_quality(alike, demo))


def test_the_shipped_regressor_belongs_to_the_demo_model(demo):
    regressor = QualityRegressor.for_model(demo)
    assert regressor is not None and regressor.model_id == demo.model_id
    assert regressor.info["examples"] > 1000
    # Trained, not merely shaped right: an untrained network correlates near 0. How well it
    # ranks masks is the benchmark's to measure (benchmarks/eval_quality.py).
    assert regressor.info["crop_validation"]["pearson"] > 0.6
    assert regressor.info["feature_validation"]["pearson"] > 0.6
    assert BayesHead.for_model(demo) is not None


def test_evaluation_reports_correlations_selection_and_a_plot(full_models, tmp_path):
    result, steps = _drain(
        evaluate_estimators(full_models, images=2, seed=99, clicks=2, objects_per_image=2)
    )
    assert len(steps) == 2
    summary = result["summary"]
    for setting in ("sam_outputs", "masks_only"):
        for estimator in ESTIMATORS:
            scores = summary[setting][estimator.value]
            assert scores["objects"] > 5 and -1 <= scores["pearson"] <= 1
    judged = {(r["image"], r["label"]) for r in result["records"]}
    assert {r["image"] for r in result["records"]} == {1, 2}
    assert summary["selection"]["choices"] == 2 * len(judged)  # a choice per click per object
    assert summary["selection"]["gain_over_sam"]["iou_head"] == 0.0  # SAM's own choice
    oracle = summary["selection"]["mean_dice"]["oracle"]
    assert all(v <= oracle + 1e-9 for v in summary["selection"]["mean_dice"].values())
    path = plot_quality(result["records"], tmp_path / "scatter.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_estimators_are_judged_on_real_images_too(full_models):
    result, steps = _drain(
        evaluate_estimators(full_models, clicks=1, objects_per_image=1, real="validation",
                            estimators=["iou_head", "ensemble"])  # fmt: skip
    )
    summary = result["summary"]
    kinds = {r["kind"] for r in result["records"]}
    assert summary["kind"] == "real-validation" and len(steps) == summary["images"] >= 5
    assert {"photo-coins", "nuclei-ihc", "mri-epi"} <= kinds
    assert summary["sam_outputs"]["iou_head"]["objects"] >= 20
    # A lone click is shown the mask the ensemble rates best, as in the annotator.
    assert summary["lone_click_judged"]
    judged = [r for r in result["records"] if r["setting"] == "sam_outputs"]
    disagreed = 0
    for image in {r["image"] for r in judged}:
        heads = {r["origin"]: r for r in judged if r["image"] == image}
        ranked = {h: heads[f"head{h}"]["predicted"] for h in (1, 2, 3)}
        shown = next(h for h in range(4) if heads[f"head{h}"]["shown"])
        assert shown == max(ranked, key=lambda h: ranked[h]["ensemble"])
        disagreed += shown != max(ranked, key=lambda h: ranked[h]["iou_head"])
    assert disagreed  # the ensemble's pick is not SAM's everywhere
