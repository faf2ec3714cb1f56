"""The quality ensemble choosing the mask shown for a lone click, on the demo model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.bench.strategies import STRATEGIES, first_click, parse_strategy
from napari_active_sam.core.data.real import real_images
from napari_active_sam.core.engine.predictor import Predictor, shown_head
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.metrics import iou
from napari_active_sam.core.prompts import Click, PromptSet
from napari_active_sam.core.quality.choice import JudgingPredictor, can_judge
from napari_active_sam.core.quality.estimators import QualityModels, QualitySample, estimate_quality
from napari_active_sam.core.sim.episode import clicks_to_prompts


def _inside(scene, label: int) -> Click:
    rows, cols = np.nonzero(scene.labels == label)
    return Click(float(cols[len(cols) // 2]), float(rows[len(rows) // 2]))


def test_a_lone_click_is_judged_by_the_ensemble(demo, full_models, ct_scene):
    scene, rgb, embedding = ct_scene
    prompts = PromptSet((_inside(scene, 1),))
    answer = Predictor(demo).predict(embedding, prompts)
    judged = full_models.judge(answer, prompts, embedding, rgb)
    expected = [
        estimate_quality(
            "ensemble", QualitySample(rgb, answer.mask(h), embedding, prompts, answer, h),
            full_models, np.random.default_rng(0),
        ).predicted_dice
        for h in (1, 2, 3)
    ]  # fmt: skip
    np.testing.assert_allclose(judged.judged, expected, rtol=1e-6)
    assert shown_head(judged, prompts) == 1 + int(np.argmax(expected))
    assert judged.logits is answer.logits  # the masks are SAM's; only the choice changes
    assert answer.judged is None


def test_the_judged_scores_pick_the_multimask_head(demo, ct_scene):
    scene, _, embedding = ct_scene
    prompts = PromptSet((_inside(scene, 1),))
    answer = Predictor(demo).predict(embedding, prompts)
    sams = answer.best_multimask_head
    for head in (1, 2, 3):
        scores = np.full(3, 0.1, np.float32)
        scores[head - 1] = 0.9
        judged = replace(answer, judged=scores)
        assert judged.best_multimask_head == head
        assert shown_head(judged, prompts) == head
        np.testing.assert_array_equal(judged.mask(), answer.mask(head))
    assert answer.best_multimask_head == sams


def test_boxes_and_several_clicks_are_not_judged(demo, full_models, ct_scene):
    scene, rgb, embedding = ct_scene
    predictor = Predictor(demo)
    rows, cols = np.nonzero(scene.labels == 1)
    box = (cols.min(), rows.min(), cols.max(), rows.max())
    for prompts, shown in (
        (PromptSet(box=box), None),  # SAM's IoU head, over all four heads
        (PromptSet((_inside(scene, 1), Click(2.0, 2.0, False))), 0),
        (PromptSet((_inside(scene, 1),), box=box), 0),
    ):
        answer = predictor.predict(embedding, prompts)
        assert full_models.judge(answer, prompts, embedding, rgb) is answer
        expected = int(np.argmax(answer.iou)) if shown is None else shown
        assert shown_head(answer, prompts) == expected


def test_without_quality_networks_sam_chooses(demo, ct_scene):
    scene, rgb, embedding = ct_scene
    bare = QualityModels(demo)
    assert not can_judge(bare)
    prompts = PromptSet((_inside(scene, 1),))
    answer = Predictor(demo).predict(embedding, prompts)
    assert bare.judge(answer, prompts, embedding, rgb) is answer


@pytest.fixture(scope="module")
def nuclei():
    """The real validation micrograph of IHC nuclei and all its nuclei."""
    (image,) = [i for i in real_images("validation") if i.subset == "nuclei-ihc"]
    return image, [image.labels == label for label in range(1, int(image.labels.max()) + 1)]


def test_a_session_shows_the_mask_its_judge_chose(demo, full_models, nuclei):
    """Real nuclei, zoomed in on: the session shows the head the ensemble rates best, which
    is not always SAM's, and on these nuclei the chosen masks are no worse than SAM's."""
    image, objects = nuclei
    source = SliceSource(image.image, image.window, rgb=True)
    judging = AnnotationSession(demo, source, EmbeddingStore(demo.encoder_id),
                                judge=full_models.judge)  # fmt: skip
    plain = AnnotationSession(demo, source, judging.store)
    spec = STRATEGIES[parse_strategy("ritm")]
    ious = {"judged": [], "sam": []}
    differ = 0
    for gt in objects:
        prompts = clicks_to_prompts(first_click(spec, gt, np.random.default_rng(0)))
        answer, sams = judging.answer((), prompts), plain.answer((), prompts)
        assert answer.prediction.judged is not None and sams.prediction.judged is None
        assert answer.head == 1 + int(np.argmax(answer.prediction.judged))
        np.testing.assert_array_equal(answer.mask, answer.prediction.mask(answer.head))
        np.testing.assert_array_equal(judging.decode((), prompts).judged,
                                      answer.prediction.judged)  # fmt: skip
        differ += answer.head != sams.head
        ious["judged"].append(iou(gt, answer.mask))
        ious["sam"].append(iou(gt, sams.mask))
    assert differ >= 1
    assert np.mean(ious["judged"]) >= np.mean(ious["sam"])


def test_a_judging_predictor_decodes_as_its_decoder(demo, full_models, ct_scene):
    scene, rgb, embedding = ct_scene
    predictor = Predictor(demo)
    judging = JudgingPredictor(predictor, full_models, rgb)
    assert judging.model is demo
    one = PromptSet((_inside(scene, 1),))
    two = one.with_click(Click(1.0, 1.0, False))
    np.testing.assert_array_equal(judging.predict(embedding, one).logits,
                                  predictor.predict(embedding, one).logits)  # fmt: skip
    assert judging.predict(embedding, one).judged is not None
    assert judging.predict(embedding, two).judged is None
