"""Volumes with credible intervals from the Bayesian head's posterior, and `measure`."""

from __future__ import annotations

import csv
import tempfile

import nibabel
import numpy as np
import pytest
import tifffile

from napari_active_sam.cli.main import main
from napari_active_sam.core.active.bayes_head import BayesHead
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.downloads import CACHE_ENV
from napari_active_sam.core.engine.preprocess import IntensityWindow, SliceSource
from napari_active_sam.core.errors import ActiveSamError, ImageError
from napari_active_sam.core.progress import drain
from napari_active_sam.core.quality.measure import COLUMNS, measure_objects


@pytest.fixture(scope="module")
def demo():
    model = load_model("demo", device="cpu")
    return model, BayesHead.for_model(model)


def test_every_organ_gets_its_volume_an_interval_and_a_predicted_dice(demo, sample_ct):
    model, head = demo
    volume, labels, spacing = sample_ct
    source = SliceSource(volume, IntensityWindow.ct("soft_tissue"))
    found = drain(measure_objects(model, head, source, labels, spacing, samples=40))
    assert [m.label for m in found] == list(range(1, 8))
    voxel = float(np.prod(spacing))
    widths = {}
    for m in found:
        organ = labels == m.label
        assert m.volume_mm3 == pytest.approx(organ.sum() * voxel)
        assert m.volume_low_mm3 <= m.volume_mm3 <= m.volume_high_mm3
        assert 0.0 <= m.predicted_dice <= 1.0
        present = np.flatnonzero(organ.any(axis=(1, 2)))
        assert (m.first_slice, m.last_slice) == (present[0], present[-1])
        widths[m.label] = (m.volume_high_mm3 - m.volume_low_mm3) / m.volume_mm3
    # The small organ the model gets wrong (lesion, label 2) is the least sure: the widest
    # interval and the lowest predicted Dice.
    assert max(widths, key=widths.get) == 2
    assert min(found, key=lambda m: m.predicted_dice).label == 2
    again = drain(measure_objects(model, head, source, labels, spacing, samples=40))
    assert again == found  # the same seed, the same draws


def test_a_2d_image_gives_areas_and_bad_input_says_what_to_do(demo, sample_ct):
    model, head = demo
    volume, labels, _ = sample_ct
    source = SliceSource(volume[12], IntensityWindow.ct("soft_tissue"))
    [m, *_] = drain(measure_objects(model, head, source, labels[12], (0.8, 0.8), samples=8,
                                    level=0.75))  # fmt: skip
    assert m.volume_mm3 == pytest.approx((labels[12] == m.label).sum() * 0.64)
    assert m.first_slice == m.last_slice == 0
    with pytest.raises(ImageError, match="does not fit a 2D image"):
        drain(measure_objects(model, head, source, labels[12], (2.5, 0.8, 0.8)))
    with pytest.raises(ImageError, match="labels have shape"):
        drain(measure_objects(model, head, source, labels, (0.8, 0.8)))
    with pytest.raises(ImageError, match="no object"):
        drain(measure_objects(model, head, source, labels[12] * 0, (0.8, 0.8)))
    series = SliceSource(np.stack([volume[:2]] * 2))  # (t, z, y, x)
    with pytest.raises(ImageError, match="4 dimensions .* a volume"):
        drain(measure_objects(model, head, series, np.stack([labels[:2]] * 2), (1, 1, 1, 1)))
    with pytest.raises(ActiveSamError, match="between 0 and 1"):
        drain(measure_objects(model, head, source, labels[12], (0.8, 0.8), level=95))
    with pytest.raises(ActiveSamError, match="give 40 or more draws"):  # too few for 95 %
        drain(measure_objects(model, head, source, labels[12], (0.8, 0.8), samples=8))


def test_measure_on_the_command_line_writes_the_table(tmp_path, monkeypatch, capsys, sample_ct):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    volume, labels, _ = sample_ct
    affine = np.diag([0.7, 0.7, 5.0, 1.0])  # x, y, z in mm
    for name, array in (("ct.nii.gz", volume[:12]), ("labels.nii.gz", labels[:12])):
        nibabel.save(nibabel.Nifti1Image(np.transpose(array.astype(np.int16), (2, 1, 0)),
                                         affine), tmp_path / name)  # fmt: skip
    out = tmp_path / "results" / "objects.csv"
    args = ["measure", "--image", str(tmp_path / "ct.nii.gz"), "--labels",
            str(tmp_path / "labels.nii.gz"), "--out", str(out), "--model", "demo",
            "--samples", "8", "--level", "0.75", "--window", "soft_tissue",
            "--overwrite"]  # fmt: skip
    # Eight draws bound a 75 % interval (two in each tail), not the 95 % one by default.
    assert main([a for a in args if a not in ("--level", "0.75")]) == 2
    assert "give 40 or more draws (--samples" in capsys.readouterr().err
    assert main(args) == 0
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    first = rows[0]
    voxels = int((labels[:12] == int(first["label"])).sum())
    assert float(first["volume_mm3"]) == pytest.approx(voxels * 0.7 * 0.7 * 5.0, rel=1e-5)
    assert float(first["volume_low_mm3"]) <= float(first["volume_mm3"])
    assert float(first["volume_mm3"]) <= float(first["volume_high_mm3"])

    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where the output's folder should be
    capsys.readouterr()
    assert main(args[:5] + ["--out", str(blocker / "objects.csv")] + args[7:]) == 2
    [kept] = (tmp_path / "tmp").glob("napari-active-sam-*/unsaved/*objects.csv")
    assert str(kept) in capsys.readouterr().err  # measured, not lost
    with open(kept) as handle:
        assert list(csv.DictReader(handle)) == rows
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, labels[:5])
    assert main(args[:4] + [str(wrong)] + args[5:]) == 2
    assert "must match their image" in capsys.readouterr().err
    assert main(args[:4] + [args[2]] + args[5:]) == 2  # the image given as its labels
    assert "is the image itself" in capsys.readouterr().err

    # A plain TIFF states no voxel size: volumes in voxels, with a warning, or in mm³ with
    # --spacing (three sizes for a volume).
    plain = tmp_path / "ct.tif"
    tifffile.imwrite(plain, volume[:12])
    tiff_args = ["measure", "--image", str(plain)] + args[3:]
    assert main(tiff_args) == 0
    said = capsys.readouterr().err
    assert "states no voxel size" in said and f": {voxels:.1f} voxels (" in said
    with open(out) as handle:
        row = next(csv.DictReader(handle))
    assert "volume_mm3" not in row and float(row["volume_voxels"]) == pytest.approx(voxels)
    assert float(row["volume_low_voxels"]) <= voxels <= float(row["volume_high_voxels"])
    assert main(tiff_args + ["--spacing", "5", "0.7", "0.7"]) == 0
    assert "states no voxel size" not in capsys.readouterr().err
    with open(out) as handle:
        assert float(next(csv.DictReader(handle))["volume_mm3"]) == pytest.approx(
            voxels * 0.7 * 0.7 * 5.0, rel=1e-5)  # fmt: skip
    assert main(tiff_args + ["--spacing", "0.7", "0.7"]) == 2
    assert "--spacing takes 3 sizes" in capsys.readouterr().err


def test_a_table_write_that_fails_part_way_keeps_the_previous_table(tmp_path, monkeypatch):
    from napari_active_sam.core.quality.assess import write_quality_csv
    from napari_active_sam.core.quality.measure import Measurement, write_measurements

    measured = [Measurement(label, 10.0 * label, 9.0 * label, 11.0 * label, 0.8, 0, 2)
                for label in (1, 2, 3)]  # fmt: skip
    table = write_measurements(measured, tmp_path / "objects.csv")
    before = table.read_text()
    written = []

    def fail_on_the_second_row(self, row):
        written.append(row)
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        return real_writerow(self, row)

    real_writerow = csv.DictWriter.writerow
    monkeypatch.setattr(csv.DictWriter, "writerow", fail_on_the_second_row)
    with pytest.raises(OSError, match="No space left"):
        write_measurements(measured[::-1], table)
    assert table.read_text() == before and [p.name for p in tmp_path.iterdir()] == [table.name]
    quality = tmp_path / "quality.csv"
    quality.write_text("kept\n")
    def disk_full(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_quality_csv([{"predicted_dice": 0.5}], quality)
    assert quality.read_text() == "kept\n"
