"""The 3D interactive protocol: episodes on the sample CT and a real MRI volume, surface
Dice, the 3D error's centre, the benchmark run and its outputs, and bad input."""

from __future__ import annotations

import csv
import json

import nibabel
import numpy as np
import pytest
import tifffile

from napari_active_sam.cli.main import main
from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.annotate.volume import PropagationSettings
from napari_active_sam.core.bench import volumes
from napari_active_sam.core.bench.episodes import worker_quality
from napari_active_sam.core.bench.volumes import (
    _corrected,
    check_volume,
    curve_area,
    play_volume,
)
from napari_active_sam.core.data.real import mri_epi_volume
from napari_active_sam.core.engine.checkpoints import ModelRef, load_model
from napari_active_sam.core.engine.downloads import CACHE_ENV
from napari_active_sam.core.engine.preprocess import IntensityWindow, SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.errors import ImageError
from napari_active_sam.core.metrics import largest_error_click, normalised_surface_dice
from napari_active_sam.core.progress import drain
from napari_active_sam.core.prompts import Click, PromptSet


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


def _session(model, volume, window=None):
    source = SliceSource(volume, window or IntensityWindow.percentile())
    return AnnotationSession(model, source, EmbeddingStore(model.encoder_id))


def test_a_box_and_corrections_on_the_sample_ct(demo, sample_ct):
    """The largest organ of the sample CT from a box: Dice and surface Dice after each
    interaction, the box first, corrections on slices of the object."""
    volume, labels, spacing = sample_ct
    session = _session(demo, volume, IntensityWindow.ct("soft_tissue"))
    gt = labels == 1
    episode = drain(play_volume(session, gt, spacing, "ritm", interactions=3))
    assert len(episode.dsc) == len(episode.nsd) == len(episode.seconds) == 3
    assert episode.interactions[0]["kind"] == "box"
    assert episode.dsc[0] >= 0.9 and min(episode.dsc) >= 0.9  # measured 0.98-0.99
    assert all(0.0 <= v <= 1.0 for v in episode.nsd) and all(s > 0 for s in episode.seconds)
    assert episode.mask.shape == gt.shape
    summary = episode.summary()
    assert summary["final_dsc"] == round(episode.dsc[-1], 6)
    assert summary["dsc_auc"] == pytest.approx(curve_area(episode.dsc), abs=1e-6)


def test_the_protocol_runs_on_a_real_mri_volume(demo):
    """nibabel's EPI volume (2 × 2 × 2.2 mm): the ventricles from a first click,
    propagated, every stop with its reason."""
    volume, labels, spacing = mri_epi_volume()
    assert spacing[0] > spacing[1]  # anisotropic, from the file
    session = _session(demo, volume)
    gt = labels == 2
    episode = drain(play_volume(session, gt, spacing, "eig", interactions=2, first="click"))
    assert episode.interactions[0]["kind"] == "click" and len(episode.dsc) == 2
    assert 0.0 < episode.dsc[0] <= 1.0
    for step in episode.interactions:
        assert all(stop.startswith("slice ") and ": " in stop for stop in step["stops"])


def test_an_object_on_one_slice_only(demo, sample_ct):
    volume, *_ = sample_ct
    gt = np.zeros(volume.shape, bool)
    gt[12, 100:130, 90:140] = True
    session = _session(demo, volume, IntensityWindow.ct("soft_tissue"))
    episode = drain(play_volume(session, gt, (5.0, 0.7, 0.7), "ritm", interactions=2))
    assert len(episode.dsc) == 2 and episode.mask[12].any()


def test_bad_volumes_are_refused_with_what_to_do(demo, sample_ct):
    volume, labels, _ = sample_ct
    session = _session(demo, volume)
    with pytest.raises(ImageError, match="needs a volume.*2D protocol"):
        check_volume(labels[0] == 1, (1.0, 1.0))
    with pytest.raises(ImageError, match="at least two slices"):
        check_volume(labels[:1] == 1, (1.0, 1.0, 1.0))
    with pytest.raises(ImageError, match="three positive numbers"):
        check_volume(labels == 1, (0.0, 1.0, 1.0))
    with pytest.raises(ImageError, match="empty"):
        drain(play_volume(session, labels == 99))
    with pytest.raises(ImageError, match="not the volume's"):
        drain(play_volume(session, labels[:, :100] == 1))


def test_corrections_are_asked_as_the_dock_asks_them():
    """On the opening slice a correction joins the box it was opened with, stretched over a
    positive click outside it (SAM answers inside a box); on a slice propagation reached it
    refines the mask there (the box around it, stretched the same way); on a slice it did
    not reach it goes with a box of the object's size on the nearest slice, centred on it,
    also when an earlier correction there left the slice empty; clicks given on a slice
    before stay."""
    mask = np.zeros((3, 100, 100), bool)
    mask[1, 47:61, 60:72] = True  # box (59.5, 46.5, 71.5, 60.5) on slice 1
    mask[2, 47:61, 60:72] = True
    opened = {1: PromptSet(box=(59.5, 46.5, 71.5, 60.5))}
    stretched = _corrected(opened, 1, mask, 1, [(37, 61, True)])
    assert stretched.box == (59.5, 36.5, 71.5, 60.5)
    assert stretched.clicks == (Click(61.0, 37.0, True),)
    assert _corrected(opened, 1, mask, 1, [(37, 61, False)]).box == opened[1].box
    assert _corrected(opened, 1, mask, 1, [(50, 65, True)]).box == opened[1].box
    both = _corrected(opened, 1, mask, 1, [(80, 20, True), (70, 90, True)])
    assert both.box == (19.5, 46.5, 90.5, 80.5) and len(both.clicks) == 2

    refined = _corrected(opened, 1, mask, 2, [(37, 61, True)])  # propagation reached 2
    assert refined == PromptSet((Click(61.0, 37.0, True),)).refining(mask[2])
    assert refined.box == (59.5, 36.5, 71.5, 60.5)
    again = _corrected({**opened, 2: refined}, 1, mask, 2, [(55, 66, False)])
    assert again.clicks == (Click(61.0, 37.0, True), Click(66.0, 55.0, False))

    placed = _corrected(opened, 1, mask, 0, [(37, 61, True)])  # it did not reach 0
    assert placed == PromptSet((Click(61.0, 37.0, True),)).placed(mask[1])
    assert placed.box == (55.0, 30.0, 67.0, 44.0)  # slice 1's size, centred on the click
    moved = _corrected({**opened, 0: placed}, 1, mask, 0, [(41, 65, True)])  # still empty
    assert moved.box == (57.0, 32.0, 69.0, 46.0) and len(moved.clicks) == 2
    nothing = np.zeros_like(mask)
    assert _corrected({}, 1, nothing, 0, [(37, 61, True)]) == PromptSet((Click(61.0, 37.0),))


def test_a_correction_where_propagation_did_not_reach_is_sized_by_its_neighbour(demo):
    """On the EPI ventricles, each slice asked with one box, growth down from the box
    stops at slice 11, and RITM's fourth correction falls on slice 6, which propagation
    did not reach: it is asked with a box of the ventricles' size on the nearest slice
    they are on, centred on the click (not a box around the object there, nor the click
    alone), and the slice gets an object that takes the click in. (The demo model outlines
    more than these 39 pixels of ventricle there; the next correction, on slice 4, wins
    back what it cost.)"""
    volume, labels, spacing = mri_epi_volume()
    session = _session(demo, volume)
    session.judge = worker_quality(ModelRef("demo"), demo, None).judge  # as benchmarked
    asked = []
    answer = session.answer

    def spy(index, prompts, **kwargs):
        asked.append((index, prompts, kwargs.get("prior")))
        return answer(index, prompts, **kwargs)

    session.answer = spy
    one_box = PropagationSettings(min_piece_fraction=None)
    episode = drain(play_volume(session, labels == 2, spacing, "ritm", interactions=6,
                                settings=one_box))  # fmt: skip
    assert "slice 11" in " ".join(episode.interactions[0]["stops"])
    assert episode.interactions[4]["slice"] == 6
    assert not any(episode.interactions[k]["slice"] == 6 for k in range(4))
    (((z,), corrected, prior),) = [(i, p, m) for i, p, m in asked if p.clicks and i == (6,)]
    (click,) = corrected.clicks
    x0, y0, x1, y1 = corrected.box
    assert prior is None and click.positive  # nothing on slice 6 to refine
    assert (x0 + x1) / 2 == click.x and (y0 + y1) / 2 == click.y
    assert (x1 - x0) * (y1 - y0) < volume[z].size / 10  # the ventricles' size, not the brain's
    assert episode.mask[6, int(click.y), int(click.x)]
    assert episode.interactions[5]["slice"] == 4 and episode.dsc[5] > episode.dsc[4]


def test_ritm_corrections_on_a_real_volume_never_click_a_voxel_twice(demo, monkeypatch):
    """On the EPI ventricles, not asked again, the model leaves a correction out of the
    mask it shows; the next corrections go elsewhere instead of asking the same voxel
    again (the 2D clicker's rule)."""
    volume, labels, spacing = mri_epi_volume()
    session = _session(demo, volume)
    session.insist = False
    still_wrong = []

    def counting(gt, mask, spacing, clicked=None):
        still_wrong.append(int((clicked & (gt != mask)).sum()))
        return largest_error_click(gt, mask, spacing, clicked)

    monkeypatch.setattr(volumes, "largest_error_click", counting)
    episode = drain(play_volume(session, labels == 2, spacing, "ritm", interactions=6))
    assert any(still_wrong)  # a clicked voxel the mask still gets wrong
    voxels = [(step["slice"], row, col) for step in episode.interactions[1:]
              for row, col, _ in step["clicks"]]  # fmt: skip
    assert len(voxels) == 5 and len(set(voxels)) == 5


def test_surface_dice_counts_surfaces_within_the_tolerance_in_mm():
    gt = np.zeros((6, 30, 30), bool)
    gt[1:5, 5:25, 5:25] = True
    shifted = np.roll(gt, 1, axis=2)  # one voxel along x
    assert normalised_surface_dice(gt, gt) == 1.0
    assert normalised_surface_dice(gt, shifted, (1.0, 1.0, 1.0), tolerance=1.0) == 1.0
    assert normalised_surface_dice(gt, shifted, (1.0, 1.0, 3.0), tolerance=1.0) < 1.0
    assert normalised_surface_dice(gt, np.zeros_like(gt)) == 0.0
    assert normalised_surface_dice(np.zeros_like(gt), np.zeros_like(gt)) == 1.0


def test_the_3d_error_centre_weighs_thick_slices():
    """A missed slab, 9 slices deep and 13 pixels wide: with 1 mm slices its centre is in
    the middle slice; the same voxels at 5 mm slices are deepest in the middle too, and the
    answer names the slice and the sign."""
    gt = np.zeros((9, 40, 40), bool)
    gt[:, 10:23, 10:30] = True
    (z, row, col), positive = largest_error_click(gt, np.zeros_like(gt), (1.0, 1.0, 1.0))
    assert positive and z == 4 and 10 <= row < 23
    extra = np.zeros_like(gt)
    extra[2:7, 30:38, 30:38] = True  # a false positive, smaller than the miss
    found = largest_error_click(gt, gt | extra, (5.0, 1.0, 1.0))
    assert found is not None and found[1] is False and found[0][0] in range(2, 7)
    assert largest_error_click(gt, gt) is None


def test_the_3d_error_centre_is_never_a_voxel_already_clicked():
    """A click the model ignored leaves its voxel an error: the next correction goes to the
    deepest voxel of the largest region not yet clicked, then to the next region once
    every voxel of the largest was clicked, and to none when all were."""
    gt = np.zeros((9, 20, 20), bool)
    gt[1:8, 5:12, 5:12] = True  # missed: a cube of 343 voxels
    gt[4, 15:17, 15:17] = True  # missed too: 4 voxels
    pred = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    first, positive = largest_error_click(gt, pred, clicked=clicked)
    assert positive and first == (4, 8, 8)
    clicked[first] = True
    second, _ = largest_error_click(gt, pred, clicked=clicked)
    assert second != first and gt[second] and 5 <= second[1] < 12
    clicked[1:8, 5:12, 5:12] = True
    third, _ = largest_error_click(gt, pred, clicked=clicked)
    assert third[0] == 4 and third[1] in (15, 16) and third[2] in (15, 16)
    clicked[gt] = True
    assert largest_error_click(gt, pred, clicked=clicked) is None
    with pytest.raises(ValueError, match="shape"):
        largest_error_click(gt, pred, clicked=clicked[0])


def test_benchmark_protocol_3d_on_the_command_line(tmp_path, monkeypatch, capsys, sample_ct):
    """`benchmark --protocol 3d` on a NIfTI volume with 5 mm slices, a 2D image (skipped,
    saying why) and a plain TIFF stack (its voxels of 1, with a warning): summary.json per
    strategy, interactions.csv, report.md."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    volume, labels, _ = sample_ct
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    affine = np.diag([0.7, 0.7, 5.0, 1.0])  # x, y, z in mm
    for name, array in (("images", volume[:12]), ("masks", labels[:12].astype(np.int16))):
        nifti = nibabel.Nifti1Image(np.transpose(array, (2, 1, 0)), affine)
        nibabel.save(nifti, data / name / "ct.nii.gz")
    tifffile.imwrite(data / "images" / "a_flat.tif", volume[0])
    tifffile.imwrite(data / "masks" / "a_flat.tif", labels[0])
    tifffile.imwrite(data / "images" / "b_plain.tif", volume[:4], photometric="minisblack")
    tifffile.imwrite(data / "masks" / "b_plain.tif", np.where(labels[:4] == 7, 7, 0),
                     photometric="minisblack")
    out = tmp_path / "out"
    code = main(["benchmark", "--data", str(data), "--model", "demo", "--protocol", "3d",
                 "--strategies", "ritm", "--clicks", "1", "--limit", "2", "--window",
                 "soft_tissue", "--out", str(out), "--workers", "1"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    figures = summary["strategies"]["ritm"]
    assert set(figures) >= {"dsc", "nsd", "dsc_auc", "nsd_auc", "final_dsc", "final_nsd",
                            "seconds_per_interaction", "objects"}  # fmt: skip
    assert figures["objects"] == 2 and len(figures["dsc"]) == len(figures["nsd"]) == 2
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert {r["image"]: r["spacing"] for r in records} == {
        "ct": pytest.approx([5.0, 0.7, 0.7]), "b_plain": [1.0, 1.0, 1.0]}  # fmt: skip
    assert {r["image"]: r["spacing_known"] for r in records} == {"ct": True, "b_plain": False}
    assert "b_plain states no voxel size" in capsys.readouterr().err
    assert summary["spacing_unknown"] == ["b_plain"]
    # Encoding is timed once per volume, apart from the interactions.
    assert set(summary["encode_seconds"]) == {"ct", "b_plain"}
    assert all(v > 0 for v in summary["encode_seconds"].values())
    with open(out / "interactions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["kind"] == "box" and {r["interaction"] for r in rows} == {"1", "2"}
    timed = {(f"{r['image']}:{r['label']}", str(n)): str(seconds)
             for r in records for n, seconds in enumerate(r["seconds"], start=1)}  # fmt: skip
    assert {(row["object"], row["interaction"]): row["seconds"] for row in rows} == timed
    skipped = json.loads((out / "skipped.json").read_text())
    assert any("a_flat" in s["file"] and "needs a volume" in s["reason"] for s in skipped)
    report = (out / "report.md").read_text()
    assert "3D benchmark" in report and "2 voxels in `b_plain`" in report

    # --spacing gives the plain TIFF its voxel size; the NIfTI keeps its own.
    given = tmp_path / "given"
    code = main(["benchmark", "--data", str(data), "--model", "demo", "--protocol", "3d",
                 "--strategies", "ritm", "--clicks", "1", "--limit", "2", "--window",
                 "soft_tissue", "--spacing", "3", "0.5", "0.5", "--out", str(given),
                 "--workers", "1"])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (given / "episodes.jsonl").read_text().splitlines()]
    assert {r["image"]: r["spacing"] for r in records} == {
        "ct": pytest.approx([5.0, 0.7, 0.7]), "b_plain": [3.0, 0.5, 0.5]}  # fmt: skip
    assert {r["image"]: r["spacing_given"] for r in records} == {"ct": False, "b_plain": True}
    assert "no voxel size" not in capsys.readouterr().err
    assert json.loads((given / "summary.json").read_text())["spacing_unknown"] == []
    assert "voxels" not in (given / "report.md").read_text()


def test_a_voxel_size_given_is_checked(tmp_path, capsys):
    """--spacing is three positive sizes, for the 3D protocol only; each refusal says what
    to do and nothing runs."""
    from napari_active_sam.core.bench.runner import BenchmarkConfig
    from napari_active_sam.core.errors import ActiveSamError

    with pytest.raises(ActiveSamError, match="three positive sizes"):
        BenchmarkConfig(tmp_path, ModelRef("demo"), protocol="3d", spacing=(5.0, 0.0, 1.0))
    (tmp_path / "images").mkdir()
    out = tmp_path / "out"
    code = main(["benchmark", "--data", str(tmp_path), "--model", "demo", "--spacing", "5",
                 "1", "1", "--out", str(out), "--workers", "1"])  # fmt: skip
    assert code != 0 and "add --protocol 3d" in capsys.readouterr().err
    assert not out.exists()
    for given in (["--first", "click"], ["--nsd-tolerance", "3"]):  # 3D options, 2D run
        code = main(["benchmark", "--data", str(tmp_path), "--model", "demo", *given,
                     "--out", str(out), "--workers", "1"])  # fmt: skip
        said = capsys.readouterr().err
        assert code != 0 and f"{given[0]} is for the 3D protocol" in said
        assert not out.exists()
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", str(tmp_path), "--model", "demo", "--protocol", "3d",
              "--spacing", "5", "-1", "1", "--out", str(out)])  # fmt: skip
    assert "--spacing" in capsys.readouterr().err
