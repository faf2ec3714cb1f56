"""Zoom-in: windows around the prompts, enlarged to the model's input, placed back; the
acquisition maps, the annotator and the quality estimators on a zoomed answer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from napari_active_sam.core.active.acquisition import uncertainty
from napari_active_sam.core.active.bayes_head import BayesHead
from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.embeddings import SliceEncoder, embed_slice
from napari_active_sam.core.engine.predictor import Predictor, PriorMask
from napari_active_sam.core.engine.preprocess import SliceSource, to_sam_rgb
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.engine.zoom import (
    MAGNIFY,
    SCALES,
    Window,
    ZoomingPredictor,
    grid_window,
    magnify_for,
    widened,
    window_around,
    zooms,
)
from napari_active_sam.core.errors import PromptError
from napari_active_sam.core.prompts import Click, PromptSet
from napari_active_sam.core.quality.estimators import (
    QualityModels,
    QualitySample,
    estimate_quality,
    sam_answer,
)

SIZE = (600, 660)
"""A slice over twice the demo model's 256 px input."""


@pytest.fixture(scope="module")
def demo():
    """The bundled model: trained, so a nucleus's mask stays inside its window."""
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def demo_head(demo):
    return BayesHead.for_model(demo)


@pytest.fixture
def large_slice() -> np.ndarray:
    """Small bright discs (nuclei) on a dark, slightly noisy background."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[: SIZE[0], : SIZE[1]]
    image = rng.normal(0.1, 0.02, SIZE).astype(np.float32)
    for r, c in [(60, 80), (200, 220), (430, 490), (120, 300)]:
        image[(rows - r) ** 2 + (cols - c) ** 2 < 12**2] = 1.0
    return image


def one_click(x: float, y: float) -> PromptSet:
    return PromptSet((Click(x, y, True),))


def test_a_window_holds_the_prompts_inside_the_slice():
    window = window_around(one_click(5, 590), SIZE, 128)
    assert window == Window(472, 0, 128, 128)  # clipped to the slice's corner
    spread = PromptSet((Click(100, 100, True), Click(160, 150, False)))
    window = window_around(spread, SIZE, 128)
    assert window.height == window.width == 128
    for click in spread.clicks:
        assert window.left <= click.x < window.left + window.width
        assert window.top <= click.y < window.top + window.height
    wide = PromptSet((Click(10, 10, True), Click(630, 590, True)))
    assert window_around(wide, SIZE, 128) is None  # most of the slice: decode it whole
    boxed = PromptSet(box=(40, 40, 200, 200))
    assert window_around(boxed, SIZE, 128).height >= 160 / (1 - 2 * 0.125) - 1


def test_a_click_gets_a_window_of_the_grid_well_inside_it_and_shares_it_with_its_neighbours():
    for x, y in [(220, 200), (5, 590), (655, 10), (330, 300), (64, 64)]:
        window = grid_window(one_click(x, y), SIZE, 128)
        assert (window.height, window.width) == (128, 128)
        # Corners every half side from the slice's origin, or flush with its far edge.
        assert window.top % 64 == 0 or window.top == SIZE[0] - 128
        assert window.left % 64 == 0 or window.left == SIZE[1] - 128
        assert window.top <= y < window.top + 128 and window.left <= x < window.left + 128
        if 64 <= x < SIZE[1] - 64 and 64 <= y < SIZE[0] - 64:  # away from the slice's edges
            assert abs(window.top + 64 - y) <= 32 and abs(window.left + 64 - x) <= 32
    assert grid_window(one_click(200, 200), SIZE, 128) == grid_window(
        one_click(210, 195), SIZE, 128
    )
    spread = PromptSet((Click(100, 100, True), Click(200, 190, False)))
    assert grid_window(spread, SIZE, 128) == window_around(spread, SIZE, 128)  # wider than it
    wide = PromptSet((Click(10, 10, True), Click(630, 590, True)))
    assert grid_window(wide, SIZE, 128) is None


def test_near_the_slice_s_edge_a_click_keeps_no_margin_from_it():
    """Clicks a few pixels below the slice's top edge, 15 apart: the margin a prompt keeps
    from a window's edge is kept only where the window ends inside the slice, so both get
    the same window of the grid, flush with the top; one that ends inside still needs it."""
    near_top = grid_window(one_click(200, 5), SIZE, 128)
    assert near_top == grid_window(one_click(215, 3), SIZE, 128)
    assert near_top.top == 0 and near_top.left % 64 == 0
    inside = grid_window(one_click(200, 125), SIZE, 128)  # 3 pixels above the grid's row 128
    assert inside.top <= 125 - 16 and inside.top + inside.height > 125 + 16


def test_the_same_click_gives_the_same_mask_whatever_was_clicked_before(demo, large_slice):
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    alone = ZoomingPredictor(Predictor(demo), large_slice, source.limits())
    first = alone.predict(embedding, one_click(300, 120))
    busy = ZoomingPredictor(Predictor(demo), large_slice, source.limits())
    for x, y in [(80, 60), (220, 200), (312, 131)]:  # other nuclei, then beside this one
        busy.predict(embedding, one_click(x, y))
    again = busy.predict(embedding, one_click(300, 120))
    assert (again.origin, again.original_size) == (first.origin, first.original_size)
    np.testing.assert_allclose(again.low_res_logits, first.low_res_logits, atol=1e-5)


def test_a_mask_chosen_after_the_window_is_never_cut_off_by_it(demo):
    """The window is sized by the head SAM rates best; a judge of masks may pick another.
    On the coins photograph a click answered by a rule that prefers the largest mask: in
    the first window the largest head runs into the window's edge, so the session decodes
    again in a larger window, where the head shown ends inside it."""
    from skimage import data

    def largest(prediction, prompts, embedding, image):
        sizes = [prediction.mask(head).sum() for head in (1, 2, 3)]
        return replace(prediction, judged=np.asarray(sizes, np.float32))

    image = data.coins()
    source = SliceSource(image)
    prompts = one_click(60.0, 240.0)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    zooming = ZoomingPredictor(Predictor(demo), image, source.limits())
    first = largest(zooming.predict(embedding, prompts), prompts, embedding, None)
    cut = widened(first, first.best_multimask_head)
    assert cut == 2 * max(first.original_size)  # the largest head reaches the window's edge

    session = AnnotationSession(demo, source, EmbeddingStore(demo.encoder_id))
    session.judge = largest
    answer = session.answer((), prompts)
    assert answer.head == answer.prediction.best_multimask_head
    assert max(answer.prediction.original_size) >= cut
    assert widened(answer.prediction, answer.head) == 0  # its mask ends inside the window
    assert answer.mask.sum() > first.mask(first.best_multimask_head).sum()

    # The benchmark's judged episodes decode the same way.
    from types import SimpleNamespace

    from napari_active_sam.core.quality.choice import JudgingPredictor

    judging = JudgingPredictor(ZoomingPredictor(Predictor(demo), image, source.limits()),
                               SimpleNamespace(judge=largest), None)  # fmt: skip
    episode = judging.predict(embedding, prompts)
    assert episode.original_size == answer.prediction.original_size
    np.testing.assert_array_equal(episode.mask(episode.best_multimask_head), answer.mask)


def test_touches_inside_ignores_the_slices_own_edges():
    window = Window(0, 100, 128, 128)
    mask = np.zeros((128, 128), bool)
    mask[0, 60] = True  # top edge of the window is the slice's: not a cut
    assert not window.touches_inside(mask, SIZE)
    mask[60, 0] = True  # left edge lies inside the slice
    assert window.touches_inside(mask, SIZE)


def test_only_slices_large_against_the_input_zoom(tiny_model):
    assert zooms(SIZE, 256) and zooms((200, 200), 128) and not zooms((180, 180), 128)
    small = np.zeros((150, 150), np.float32)
    small[50:90, 50:90] = 1
    source = SliceSource(small)
    embedding = embed_slice(tiny_model, source, EmbeddingStore(tiny_model.encoder_id))
    zooming = ZoomingPredictor(Predictor(tiny_model), small, source.limits())
    prompts = one_click(70, 70)
    zoomed = zooming.predict(embedding, prompts)
    plain = Predictor(tiny_model).predict(embedding, prompts)
    assert not zoomed.zoomed and zooming.windows_encoded == 0
    np.testing.assert_array_equal(zoomed.low_res_logits, plain.low_res_logits)


def test_a_small_object_is_decoded_in_a_window_and_placed_back(demo, large_slice):
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    predictor = Predictor(demo)
    zooming = ZoomingPredictor(predictor, large_slice, source.limits(), scales=(1.0,))
    prompts = one_click(220, 200)
    prediction = zooming.predict(embedding, prompts)
    assert prediction.zoomed and prediction.full_size == SIZE
    assert zooming.windows_encoded == 1
    row, col = prediction.origin
    height, width = prediction.original_size
    assert row <= 200 < row + height and col <= 220 < col + width

    # The same as decoding the window by hand, placed on the slice.
    window = large_slice[row : row + height, col : col + width]
    (local,) = SliceEncoder(demo).encode([to_sam_rgb(window, source.limits())], ["w"])
    by_hand = predictor.predict(local, prompts.translated(-row, -col))
    np.testing.assert_allclose(prediction.low_res_logits, by_hand.low_res_logits, atol=1e-5)
    probability = prediction.probability(0)
    assert probability.shape == SIZE
    np.testing.assert_allclose(probability[row : row + height, col : col + width],
                               by_hand.probability(0), atol=1e-6)  # fmt: skip
    outside = np.ones(SIZE, bool)
    outside[row : row + height, col : col + width] = False
    assert not probability[outside].any()

    # A second click nearby reuses the window and takes its logits back.
    more = prompts.with_click(Click(230, 205, True))
    again = zooming.predict(embedding, more, prediction.low_res_logits[0])
    assert zooming.windows_encoded == 1 and again.origin == prediction.origin
    fed = predictor.predict(local, more.translated(-row, -col), prediction.low_res_logits[0])
    np.testing.assert_allclose(again.low_res_logits, fed.low_res_logits, atol=1e-5)


def test_a_lone_click_is_decoded_at_each_scale_and_the_answer_rated_best_kept(
    demo, large_slice
):
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    predictor, prompts = Predictor(demo), one_click(220, 200)
    alone = {
        side: ZoomingPredictor(predictor, large_slice, source.limits(), magnify=m, scales=(1.0,))
        .predict(embedding, prompts)
        for side, m in ((128, MAGNIFY), (64, 2 * MAGNIFY))
    }  # fmt: skip
    two = (1.0, 2.0)  # × 2 and × 4
    assert {a.original_size for a in alone.values()} == {(128, 128), (64, 64)}

    def preferring(side: int):
        """A judge that rates the masks of a window of ``side`` best."""

        def judge(prediction, *_):
            score = 1.0 if prediction.original_size == (side, side) else 0.5
            return replace(prediction, judged=np.full(3, score, np.float32))

        return judge

    for side in (128, 64):
        zooming = ZoomingPredictor(predictor, large_slice, source.limits(), scales=two)
        chosen = zooming.predict(embedding, prompts, judge=preferring(side))
        assert zooming.windows_encoded == 2 and chosen.original_size == (side, side)
        np.testing.assert_allclose(chosen.low_res_logits, alone[side].low_res_logits, atol=1e-5)
        # The object's next click refines the answer in the window chosen for the first,
        # whatever a judge would prefer.
        more = prompts.with_click(Click(224, 204, True))
        again = zooming.predict(embedding, more, chosen.logits[0], judge=preferring(192 - side))
        assert again.origin == chosen.origin and again.original_size == (side, side)
        assert zooming.windows_encoded == 2

    # The benchmark's judged decoder rates the scales as the annotator does.
    from types import SimpleNamespace

    from napari_active_sam.core.quality.choice import JudgingPredictor

    judging = JudgingPredictor(
        ZoomingPredictor(predictor, large_slice, source.limits(), scales=two),
        SimpleNamespace(judge=preferring(64)), None,
    )  # fmt: skip
    assert judging.predict(embedding, prompts).original_size == (64, 64)

    # Without a judge, SAM's IoU head rates them.
    best = max(alone.values(), key=lambda a: float(np.max(a.iou[1:])))
    unjudged = ZoomingPredictor(predictor, large_slice, source.limits(), scales=two)
    assert unjudged.predict(embedding, prompts).original_size == best.original_size
    # By default a lone click is decoded at the zoom's magnification only.
    default = ZoomingPredictor(predictor, large_slice, source.limits())
    assert default.predict(embedding, prompts).original_size == (128, 128)
    assert default.windows_encoded == len(SCALES) == 1
    with pytest.raises(ValueError, match="scales"):
        ZoomingPredictor(predictor, large_slice, source.limits(), scales=(0.5, 1.0))
    with pytest.raises(ValueError, match="scales"):
        ZoomingPredictor(predictor, large_slice, source.limits(), scales=(1.0, float("nan")))


def test_an_answer_edited_at_its_clicks_is_asked_again_in_its_window(demo, large_slice):
    # A lone click answered in the window four times enlarged (a judge prefers it); the
    # answer edited at the clicks it left out goes back to that window, not to a new one at
    # the model's magnification.
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    zooming = ZoomingPredictor(Predictor(demo), large_slice, source.limits(), scales=(1.0, 2.0))

    def small_window(prediction, *_):
        score = 1.0 if prediction.original_size == (64, 64) else 0.0
        return replace(prediction, judged=np.full(3, score, np.float32))

    first = zooming.predict(embedding, one_click(220, 200), judge=small_window)
    assert first.original_size == (64, 64)
    prompts = one_click(220, 200).with_click(Click(226, 204, True))
    edited = np.zeros(SIZE, bool)
    edited[190:212, 210:232] = True
    window = (*first.origin, *first.original_size)
    again = zooming.predict(embedding, prompts, PriorMask(edited, window))
    assert again.origin == first.origin and again.original_size == (64, 64)
    assert zooming.predict(embedding, prompts, PriorMask(edited)).original_size == (128, 128)
    # A window the prompts have left is not kept.
    far = prompts.with_click(Click(300, 300, True))
    assert zooming.predict(embedding, far, PriorMask(edited, window)).original_size != (64, 64)


def test_a_prior_mask_of_the_slice_is_cut_to_the_window(demo, large_slice):
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    predictor = Predictor(demo)
    zooming = ZoomingPredictor(predictor, large_slice, source.limits())
    box = PromptSet(box=(190.0, 175.0, 250.0, 225.0))
    prior = np.zeros(SIZE, bool)
    prior[180:220, 195:245] = True
    prediction = zooming.predict(embedding, box, PriorMask(prior))
    assert prediction.zoomed
    row, col = prediction.origin
    height, width = prediction.original_size
    window = large_slice[row : row + height, col : col + width]
    (local,) = SliceEncoder(demo).encode([to_sam_rgb(window, source.limits())], ["w"])
    cut = PriorMask(prior[row : row + height, col : col + width])
    by_hand = predictor.predict(local, box.translated(-row, -col), cut)
    np.testing.assert_allclose(prediction.low_res_logits, by_hand.low_res_logits, atol=1e-5)
    with pytest.raises(PromptError, match="give a mask of the slice"):  # not cut silently
        zooming.predict(embedding, box, PriorMask(np.zeros((700, 700), bool)))


@pytest.mark.parametrize("name", ["eig", "bald", "entropy"])
def test_uncertainty_of_a_zoomed_answer_lies_on_the_slice(demo, demo_head, large_slice,
                                                         name):  # fmt: skip
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    predictor = Predictor(demo)
    prompts = PromptSet((Click(300, 120, True), Click(280, 100, False)))
    prediction = ZoomingPredictor(predictor, large_slice, source.limits()).predict(
        embedding, prompts
    )
    assert prediction.zoomed
    row, col = prediction.origin
    height, width = prediction.original_size
    found = uncertainty(name, prediction, prompts, demo, demo_head, 8, 5,
                        rng=np.random.default_rng(0))  # fmt: skip
    assert found.scores.shape == found.probability.shape == SIZE
    assert found.scores[row : row + height, col : col + width].max() > 0
    assert found.scores.sum() == pytest.approx(
        found.scores[row : row + height, col : col + width].sum()
    )

    # The window's own answer, with the prompts in its pixels, gives the same suggestions
    # moved by the window's corner.
    window = large_slice[row : row + height, col : col + width]
    (local,) = SliceEncoder(demo).encode([to_sam_rgb(window, source.limits())], ["w"])
    local_prompts = prompts.translated(-row, -col)
    by_hand = uncertainty(name, predictor.predict(local, local_prompts), local_prompts,
                          demo, demo_head, 8, 5, rng=np.random.default_rng(0))  # fmt: skip
    assert found.suggestions
    assert [v for s in found.suggestions for v in (s.x, s.y)] == pytest.approx(
        [v for s in by_hand.suggestions for v in (s.x + col, s.y + row)], abs=1e-3
    )
    for s in found.suggestions:
        assert col <= s.x < col + width and row <= s.y < row + height


def test_the_annotator_zooms_on_large_slices_only_when_asked(demo, large_slice):
    def session(zoom: bool) -> AnnotationSession:
        return AnnotationSession(demo, SliceSource(large_slice),
                                 EmbeddingStore(demo.encoder_id), zoom=zoom)  # fmt: skip

    zoomed, whole = session(True), session(False)
    first = zoomed.answer((), one_click(80, 60), acquisition="eig")
    assert first.prediction.zoomed and first.mask.shape == SIZE
    assert first.uncertainty.scores.shape == SIZE
    assert zoomed.windows_encoded == len(SCALES)  # a lone click: a window at each scale
    second = zoomed.answer((), one_click(80, 60).with_click(Click(85, 62, True)))
    assert second.prediction.origin == first.prediction.origin
    assert second.prediction.original_size == first.prediction.original_size
    assert zoomed.windows_encoded == len(SCALES)  # the object's window, reused
    plain = whole.answer((), one_click(80, 60))
    assert not plain.prediction.zoomed and whole.windows_encoded == 0


def test_a_session_that_switches_to_a_model_of_another_zoom_decodes_at_it(demo, large_slice):
    def two_clicks(x: float, y: float) -> PromptSet:  # not a lone click: one scale
        return one_click(x, y).with_click(Click(x + 4, y + 2, True))

    session = AnnotationSession(demo, SliceSource(large_slice), EmbeddingStore(demo.encoder_id))
    first = session.answer((), two_clicks(80, 60))
    assert first.prediction.original_size == (128, 128)
    session.use_model(replace(demo, extra={**demo.extra, "magnify": 4.0}))
    again = session.answer((), two_clicks(300, 400))
    assert again.prediction.original_size == (64, 64)
    # The adapted model knows its objects' size: a lone click is decoded at its scale only.
    encoded = session.windows_encoded
    assert session.answer((), one_click(430, 120)).prediction.original_size == (64, 64)
    assert session.windows_encoded == encoded + 1
    session.use_model(demo)  # back to the base model, and its zoom
    assert session.answer((), two_clicks(500, 200)).prediction.original_size == (128, 128)


def test_quality_estimators_ask_sam_in_a_window_on_large_slices(demo, demo_head,
                                                              large_slice):  # fmt: skip
    source = SliceSource(large_slice)
    rgb = source.sam_slice((), source.limits())
    rows, cols = np.mgrid[: SIZE[0], : SIZE[1]]
    mask = (rows - 200) ** 2 + (cols - 220) ** 2 < 12**2
    models = QualityModels(demo, demo_head)
    sample = QualitySample(rgb, mask)
    prediction, prompts, head = sam_answer(sample, models)
    assert prediction.zoomed and prediction.mask(head).shape == SIZE
    for estimator in ("iou_head", "posterior"):
        estimate = estimate_quality(estimator, sample, models, np.random.default_rng(0))
        assert 0.0 <= estimate.predicted_dice <= 1.0
    # A lone click is answered as the annotator answers it: the ensemble picks the mask.
    clicked = QualitySample(rgb, mask, prompts=one_click(220, 200))
    prediction, _, head = sam_answer(clicked, models)
    assert prediction.zoomed and prediction.judged is not None
    assert head == int(np.argmax(prediction.judged)) + 1
    models.zoom = False
    assert not sam_answer(sample, models)[0].zoomed


def test_zoom_outlines_small_nuclei_far_better_than_the_whole_slice(demo):
    from napari_active_sam.core.data.scenes import make_scene

    scene = make_scene("nuclei", np.random.default_rng(3), 256)
    image = np.full((1024, 1024), np.median(scene.image), scene.image.dtype)
    labels = np.zeros(image.shape, int)
    image[300:556, 400:656], labels[300:556, 400:656] = scene.image, scene.labels
    source = SliceSource(image, scene.window)
    limits = SliceSource(scene.image, scene.window).limits()  # the scene's own contrast
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id), limits=limits)
    predictor = Predictor(demo)
    zooming = ZoomingPredictor(predictor, image, limits)
    gains = []
    for label in range(1, 6):
        gt = labels == label
        row, col = np.argwhere(gt).mean(axis=0)
        prompts = one_click(col, row)
        plain, zoomed = predictor.predict(embedding, prompts), zooming.predict(embedding, prompts)
        assert zoomed.full_size == image.shape

        def iou(mask, gt=gt):
            return (mask & gt).sum() / (mask | gt).sum()

        gains.append(iou(zoomed.mask()) - iou(plain.mask()))
    # Nuclei of a dozen pixels shrunk four times are specks; at full resolution they are not.
    assert np.mean(gains) > 0.3


def test_the_first_window_is_the_input_side_over_the_magnification(demo, large_slice):
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    disc = np.zeros(SIZE, bool)
    rows, cols = np.mgrid[: SIZE[0], : SIZE[1]]
    disc[(rows - 200) ** 2 + (cols - 220) ** 2 < 12**2] = True
    sides = {}
    for magnify in (1, 2, 4):
        zooming = ZoomingPredictor(Predictor(demo), large_slice, source.limits(),
                                   magnify=magnify, scales=(1.0,))  # fmt: skip
        prediction = zooming.predict(embedding, one_click(220, 200))
        sides[magnify] = prediction.original_size
        mask = prediction.mask()
        assert (mask & disc).sum() / (mask | disc).sum() > 0.7  # the disc, at any scale
    # The disc fits every first window, so none doubles: 256, 128 and 64 pixels of the slice
    # for the model's 256 px input.
    assert sides == {1: (256, 256), 2: (128, 128), 4: (64, 64)}
    with pytest.raises(ValueError, match="magnify"):
        ZoomingPredictor(Predictor(demo), large_slice, source.limits(), magnify=0.5)


def test_objects_of_a_size_ask_for_the_magnification_that_makes_them_a_quarter_of_the_input():
    # The median object spans about a quarter of the 256 px input, in powers of two.
    assert magnify_for([14, 12, 16, 40], 256) == 4  # IHC nuclei: 14 px
    assert magnify_for([40, 38, 45], 256) == 2  # coins
    assert magnify_for([300, 200], 256) == 1  # organs: never shrunk below the slice's own
    assert magnify_for([2, 3], 256) == 4  # at most four times
    assert magnify_for([], 256) == magnify_for([0, 0], 256) == MAGNIFY  # nothing to go by


def test_a_model_that_carries_a_magnification_is_decoded_at_it(demo, large_slice):
    source = SliceSource(large_slice)
    embedding = embed_slice(demo, source, EmbeddingStore(demo.encoder_id))
    sides = {}
    for magnify in (None, 4.0):
        extra = demo.extra if magnify is None else {**demo.extra, "magnify": magnify}
        model = replace(demo, extra=extra)
        zooming = ZoomingPredictor(Predictor(model), large_slice, source.limits())
        two_clicks = one_click(220, 200).with_click(Click(224, 203, True))
        sides[magnify] = zooming.predict(embedding, two_clicks).original_size
    assert sides == {None: (128, 128), 4.0: (64, 64)}


def test_prompts_move_into_a_window_and_scale_with_the_image():
    prompts = PromptSet((Click(10, 20, True), Click(30, 5, False)), box=(1, 2, 40, 30))
    moved = prompts.translated(-5, -8)
    assert [(c.x, c.y, c.positive) for c in moved.clicks] == [(2, 15, True), (22, 0, False)]
    assert moved.box == (-7, -3, 32, 25) and moved.translated(5, 8) == prompts
    assert prompts.scaled(1) is prompts
    doubled = prompts.scaled(2)
    assert (doubled.clicks[0].x, doubled.clicks[0].y) == (20.5, 40.5)  # centres to centres
    assert doubled.scaled(0.5) == prompts
