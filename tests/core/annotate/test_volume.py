"""Propagation through a volume, on the demo model and the sample CT volume."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam._sample_data import ct_volume
from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.annotate.volume import PropagationSettings, propagate
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.preprocess import IntensityWindow, SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.progress import drain
from napari_active_sam.core.sim.clicker import prompts_from_mask


def _drain(generator):
    steps = []
    return drain(generator, steps.append), steps


def test_prompts_from_a_mask_box_and_deepest_point():
    mask = np.zeros((20, 30), bool)
    mask[4:11, 6:19] = True
    prompts = prompts_from_mask(mask)
    assert prompts.box == (5.5, 3.5, 18.5, 10.5)
    (click,) = prompts.clicks
    assert click.positive and mask[int(click.y), int(click.x)] and click.y == 7


def test_spine_grows_from_one_slice_through_the_volume():
    (volume, _, _), (organs, _, _) = ct_volume()
    model = load_model("demo", device="cpu")
    source = SliceSource(volume[4:20], IntensityWindow.ct("soft_tissue"))
    session = AnnotationSession(model, source, EmbeddingStore(model.encoder_id))
    truth = organs[4:20] == 7
    result, steps = _drain(propagate(session, {8: truth[8]}))
    grown = result.mask
    assert steps[-1].done == steps[-1].total
    assert grown[8].sum() == truth[8].sum()  # the seed slice is kept as given
    per_slice = [
        2 * (grown[z] & truth[z]).sum() / (grown[z].sum() + truth[z].sum()) for z in range(16)
    ]
    assert np.mean(per_slice) > 0.6 and grown.any(axis=(1, 2)).sum() >= 12


def test_growth_stops_where_the_object_ends():
    (volume, _, _), (organs, _, _) = ct_volume()
    model = load_model("demo", device="cpu")
    source = SliceSource(volume, IntensityWindow.ct("soft_tissue"))
    session = AnnotationSession(model, source, EmbeddingStore(model.encoder_id))
    lesion = organs == 2
    present = np.flatnonzero(lesion.any(axis=(1, 2)))
    middle = int(present[len(present) // 2])
    result, _ = _drain(propagate(session, {middle: lesion[middle]}))
    grown = result.mask
    grown_slices = np.flatnonzero(grown.any(axis=(1, 2)))
    # The lesion spans a few slices; growth must not run through the whole volume, and the
    # result says where it stopped and why.
    assert len(grown_slices) < volume.shape[0] // 2
    assert len(result.stops) == 2
    below, above = sorted(result.stops, key=lambda stop: int(stop.split()[1].rstrip(":")))
    assert below.startswith(f"slice {grown_slices[0] - 1}: ")
    assert above.startswith(f"slice {grown_slices[-1] + 1}: ")


def test_a_one_pixel_thin_mask_still_prompts():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 4] = True
    prompts = prompts_from_mask(mask)
    assert prompts.box[0] < prompts.box[2] and prompts.box[1] < prompts.box[3]


def test_every_slice_reports_how_sure_the_model_was_and_every_stop_says_why():
    """The per-slice report behind the strip along z: uncertainty and predicted IoU of
    every decoded slice, the kept ones and the one where growth stopped, the least sure
    kept slice; a stop for uncertainty says so."""
    (volume, _, _), (organs, _, _) = ct_volume()
    model = load_model("demo", device="cpu")
    source = SliceSource(volume, IntensityWindow.ct("soft_tissue"))
    session = AnnotationSession(model, source, EmbeddingStore(model.encoder_id))
    organ = organs == 3
    middle = int(np.flatnonzero(organ.any(axis=(1, 2))).mean())
    result, _ = _drain(propagate(session, {middle: organ[middle]}))
    kept = [z for z, report in result.slices.items() if report.kept]
    assert sorted(kept) == [z for z in np.flatnonzero(result.mask.any(axis=(1, 2))) if z != middle]
    assert all(0 <= r.uncertainty <= np.log(2) + 1e-6 and 0 <= r.predicted_iou <= 1.5
               for r in result.slices.values())  # fmt: skip
    assert result.least_sure in kept
    for stop in result.stops:
        assert stop.split(": ", 1)[1].endswith(("(uncertain)", "(it leaked)", "tissue)",
                                                "(it is vanishing)", "(it vanished)"))  # fmt: skip
    # A threshold below what every kept slice showed stops growth at once, saying why.
    strict = PropagationSettings(max_uncertainty=min(result.slices[z].uncertainty
                                                     for z in kept) / 2)  # fmt: skip
    stopped, _ = _drain(propagate(session, {middle: organ[middle]}, strict))
    assert stopped.mask.any(axis=(1, 2)).sum() == 1
    assert any("heads disagree" in stop and "(uncertain)" in stop for stop in stopped.stops)


def test_a_grown_object_is_held_as_its_slices_bounding_boxes():
    from napari_active_sam.core.annotate.volume import SliceMasks

    masks = SliceMasks((5, 400, 300))
    disc = np.zeros((400, 300), bool)
    disc[100:120, 50:90] = True
    masks[1] = disc
    masks[3] = np.roll(disc, 7, axis=0)
    masks[4] = np.zeros((400, 300), bool)  # nothing there: nothing kept
    assert masks.slices() == [1, 3]
    assert masks.nbytes == 2 * 20 * 40  # the boxes, not 2 × 400 × 300
    assert np.array_equal(masks[1], disc) and not masks[0].any()
    dense = masks.dense()
    assert dense.shape == (5, 400, 300) and dense.sum() == 2 * disc.sum()
    masks[1] = np.zeros((400, 300), bool)  # overwritten with nothing: gone
    assert masks.slices() == [3]
    with pytest.raises(ValueError, match="must be"):
        masks[2] = np.ones((10, 10), bool)


@pytest.fixture(scope="module")
def epi():
    """A session on nibabel's real EPI volume, and its labels (1 brain, 2 ventricles)."""
    from napari_active_sam.core.data.real import mri_epi_volume

    volume, labels, _ = mri_epi_volume()
    model = load_model("demo", device="cpu")
    session = AnnotationSession(model, SliceSource(volume, IntensityWindow.percentile()),
                                EmbeddingStore(model.encoder_id))  # fmt: skip
    return session, labels


@pytest.fixture
def epi_brain(epi):
    session, labels = epi
    return session, labels == 1


def test_a_correction_of_a_given_mask_is_shown_by_the_best_rated_head_that_takes_it_in(epi):
    """Slice 12 of the real EPI volume, its brain outline grown by two pixels (a mask
    propagation overshot), corrected by a negative click in that rim. SAM's single-mask
    answer, the head usually shown for clicks with a box, cuts nearly half the brain away;
    the session shows the head SAM rates best, which keeps it. Where the best-rated head
    leaves the click out, the best-rated of those that take it in is shown. Without a mask
    to refine the clicks are no correction, and the usual head is shown. (SAM's answers as
    they come: a session that asks again when a click is left out is tested in
    tests/core/engine/test_insist.py.)"""
    from dataclasses import replace

    from scipy import ndimage

    from napari_active_sam.core.engine.predictor import contradicted, refining_head, shown_head
    from napari_active_sam.core.metrics import dice
    from napari_active_sam.core.prompts import Click, PromptSet

    session, labels = epi
    session = replace(session, insist=False)
    brain = labels[12] == 1
    prior = ndimage.binary_dilation(brain, iterations=2)
    assert prior[34, 66] and not brain[34, 66]
    prompts = PromptSet((Click(66.0, 34.0, False),)).refining(prior)
    heads = session.decode((12,), prompts, prior)
    usual = shown_head(heads, prompts)
    assert usual == 0 and dice(heads.mask(usual), brain) < 0.75
    session.forget((12,))
    answer = session.answer((12,), prompts, prior=prior)
    assert answer.head == int(np.argmax(heads.iou)) != usual
    assert not answer.mask[34, 66] and dice(answer.mask, brain) > 0.85

    # The best-rated head leaves this click in the mask: the next best that takes it out.
    prompts = PromptSet((Click(73.0, 70.0, False),)).refining(prior)
    heads = session.decode((12,), prompts, prior)
    best = int(np.argmax(heads.iou))
    assert contradicted(heads, best, prompts) == 1
    session.forget((12,))
    answer = session.answer((12,), prompts, prior=prior)
    assert answer.head != best and contradicted(heads, answer.head, prompts) == 0
    assert all(heads.iou[answer.head] >= heads.iou[h] for h in range(4)
               if h != best and not contradicted(heads, h, prompts))  # fmt: skip

    # Without a mask to refine, SAM's usual head is shown, though the rule for a
    # correction would pick another.
    fresh = PromptSet((Click(66.0, 34.0, False),)).refining(prior)
    heads = session.decode((12,), fresh)
    assert refining_head(heads, fresh) != shown_head(heads, fresh)
    session.forget((12,))
    plain = session.answer((12,), fresh)
    assert plain.head == shown_head(heads, fresh)
    session.forget((12,))


def _box_seed(session, brain):
    """The brain's largest slice and the mask SAM answers a box around the brain with
    there."""
    from napari_active_sam.core.prompts import PromptSet

    z = int(np.argmax(brain.sum(axis=(1, 2))))
    rows, cols = np.nonzero(brain[z])
    box = (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))
    return z, session.answer((z,), PromptSet(box=box)).mask


def test_a_real_brain_grows_from_its_box_through_the_volume(epi_brain):
    """nibabel's real EPI volume: the demo model's answer to a box around the brain on its
    largest slice is rated below 0.5 on the neighbouring slices though it is right there;
    with the default settings growth goes on through most of the brain's slices."""
    from napari_active_sam.core.metrics import dice

    session, brain = epi_brain
    z, seed = _box_seed(session, brain)
    result, _ = _drain(propagate(session, {z: seed}))
    grown = result.mask.any(axis=(1, 2))
    assert grown.sum() >= 0.6 * brain.any(axis=(1, 2)).sum()
    assert dice(brain, result.mask) > 0.5
    strict, _ = _drain(propagate(session, {z: seed}, PropagationSettings(min_iou=0.5)))
    assert strict.mask.any(axis=(1, 2)).sum() < grown.sum()  # the old floor stopped early


def test_growth_goes_on_where_the_box_alone_loses_the_brain_but_its_outline_holds(epi_brain):
    """Near the real EPI volume's top and bottom the demo model answers a box around the
    brain with a part of it (a mask a fifth of its neighbour's: "vanishing"); given the
    neighbour's mask as well it keeps the outline without growing, and growth goes on
    through every slice. Where that answer may not hold it, growth stops there, saying
    why. (Past an organ's end, where the answer with the mask grows, growth still stops:
    test_growth_stops_where_the_object_ends.)"""
    from napari_active_sam.core.metrics import dice

    session, brain = epi_brain
    z, seed = _box_seed(session, brain)
    held, _ = _drain(propagate(session, {z: seed}))
    lost, _ = _drain(propagate(session, {z: seed}, PropagationSettings(max_held_growth=0)))
    assert held.mask.any(axis=(1, 2)).all() and not held.stops
    assert len(lost.stops) == 2 and all("(it is vanishing)" in stop for stop in lost.stops)
    for stop in lost.stops:
        assert held.slices[int(stop.split(":")[0].split()[1])].kept
    assert lost.mask.any(axis=(1, 2)).sum() < brain.shape[0] - 4
    assert dice(brain, held.mask) > dice(brain, lost.mask) + 0.1


def test_the_outline_of_a_corrected_slice_carries_on_to_the_next_slices(epi_brain):
    """A user's exact brain outline on one slice of the real EPI volume: prompted with each
    neighbour's mask as well as its box, the slices grown from it follow that outline
    through the volume; from the box alone the demo model outlines parts of the brain on
    the slices far from it."""
    from napari_active_sam.core.metrics import dice

    session, brain = epi_brain
    z = int(np.argmax(brain.sum(axis=(1, 2))))
    with_mask, _ = _drain(propagate(session, {z: brain[z]}))
    box_alone, _ = _drain(propagate(session, {z: brain[z]},
                                    PropagationSettings(mask_prompt=False)))  # fmt: skip
    assert with_mask.mask[brain.any(axis=(1, 2))].any(axis=(1, 2)).all()
    assert dice(brain, with_mask.mask) > 0.9
    assert dice(brain, box_alone.mask) < 0.8


def test_growth_from_one_seed_goes_on_where_growth_from_the_next_stopped_short():
    """Two seeds: the liver on slice 8 and nothing on slice 23 (past its end). Growth from
    the empty seed stops at once; growth from the liver then fills the slices beyond the
    half-way slice as well, instead of leaving them empty."""
    (volume, _, _), (organs, _, _) = ct_volume()
    model = load_model("demo", device="cpu")
    source = SliceSource(volume, IntensityWindow.ct("soft_tissue"))
    session = AnnotationSession(model, source, EmbeddingStore(model.encoder_id))
    liver = organs == 1
    assert not liver[23].any() and liver[16:23].any(axis=(1, 2)).all()
    result, steps = _drain(propagate(session, {8: liver[8], 23: liver[23]}))
    grown = result.mask
    beyond_half_way = range(16, 23)
    assert sum(grown[z].any() for z in beyond_half_way if liver[z].any()) >= 5
    for stop in result.stops:  # a stop that the other side's growth overcame is not said
        assert not grown[int(stop.split()[1].rstrip(":"))].any()
    assert steps[-1].done == steps[-1].total


def test_growth_stops_where_the_mask_leaves_the_seeds_tissue(epi):
    """The real EPI volume's ventricles grown from a box on their largest slice: past
    their end the demo model carries the mask onto darker tissue. Judged against the
    seed's intensity, growth stops on that slice and says why, and puts less outside the
    ventricles; without the rule the mask goes on there."""
    from napari_active_sam.core.prompts import PromptSet, box_around

    session, labels = epi
    ventricles = labels == 2
    z = int(np.argmax(ventricles.sum(axis=(1, 2))))
    seed = session.answer((z,), PromptSet(box=box_around(ventricles[z]))).mask
    free, _ = _drain(propagate(session, {z: seed}, PropagationSettings(max_intensity_shift=None)))
    judged, _ = _drain(propagate(session, {z: seed}))
    (left,) = [stop for stop in judged.stops if "mean intensity moved" in stop]
    stopped = int(left.split(":")[0].split()[1])
    assert free.mask[stopped].any()
    beyond = slice(stopped, None) if stopped > z else slice(None, stopped + 1)
    assert not judged.mask[beyond].any() and judged.slices[stopped].kept is False
    overshoot = [(m & ~ventricles[k]).sum() for k, m in enumerate(judged.mask)]
    assert sum(overshoot) < sum((m & ~ventricles[k]).sum() for k, m in enumerate(free.mask))


@pytest.mark.parametrize(("shift", "stops"), [(1.9, False), (-2.1, True), (2.1, True)])
def test_the_intensity_rule_stops_past_its_bound_either_way(shift, stops):
    settings = PropagationSettings(max_intensity_shift=2.0)
    reason = settings.stop_reason("SAM", 0.9, 0.0, 100, 100, shift)
    assert bool(reason) is stops
    assert PropagationSettings(max_intensity_shift=None).stop_reason(
        "SAM", 0.9, 0.0, 100, 100, 50.0) == ""  # fmt: skip


def test_a_mask_in_pieces_is_prompted_piece_by_piece_largest_first():
    from napari_active_sam.core.annotate.volume import pieces

    mask = np.zeros((40, 60), bool)
    mask[2:12, 2:22] = True  # 200 pixels
    mask[20:30, 30:45] = True  # 150
    mask[35:37, 50:52] = True  # 4: under a tenth, it ends here
    mask[12, 22] = True  # touches the first piece's corner: 8-connected to it
    found = pieces(mask, 0.1)
    assert [int(p.sum()) for p in found] == [201, 150]
    assert not np.logical_or.reduce(found)[35:37, 50:52].any()
    assert [int(p.sum()) for p in pieces(mask, 0.9)] == [201]  # the largest always
    (whole,) = pieces(mask, None)
    assert np.array_equal(whole, mask)


def test_where_one_box_stops_a_mask_in_pieces_grows_piece_by_piece(epi):
    """The real EPI volume's ventricles on slice 11 lie in three pieces (the frontal horns
    and a posterior part). One box around them all is answered with the tissue between
    (slice 10: several times the seed's area) or with darker tissue (slice 12), and growth
    stops on both sides; asked piece by piece, it goes on through both neighbours."""
    from napari_active_sam.core.annotate.volume import pieces
    from napari_active_sam.core.metrics import dice

    session, labels = epi
    ventricles = labels == 2
    z = 11
    assert len(pieces(ventricles[z], 0.1)) == 3
    whole, _ = _drain(propagate(session, {z: ventricles[z]},
                                PropagationSettings(min_piece_fraction=None)))  # fmt: skip
    split, _ = _drain(propagate(session, {z: ventricles[z]}))
    assert whole.masks.slices() == [z] and len(whole.stops) == 2
    assert {z - 1, z + 1} <= set(split.masks.slices())
    assert all(split.slices[k].kept and split.slices[k].area == split.mask[k].sum()
               for k in (z - 1, z + 1))  # fmt: skip
    assert dice(ventricles, split.mask) > dice(ventricles, whole.mask) + 0.15
