"""DICOM SEG on a real CT series: written with highdicom, read back on the series' grid,
opened in napari next to its series, exported from the command line."""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from napari_active_sam.cli.main import main
from napari_active_sam.core.data.dicom_seg import read_seg, write_seg
from napari_active_sam.core.data.files import read_image
from napari_active_sam.core.engine.downloads import CACHE_ENV
from napari_active_sam.core.errors import ImageError
from napari_active_sam.io import napari_get_reader, napari_write_labels


def _series(folder, slices: int = 4, step: float = 5.0):
    """pydicom's CT_small.dcm (a real 128 × 128 CT image) as a series of ``slices``
    images ``step`` mm apart, written out of order."""
    folder.mkdir(parents=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = generate_uid()
    for i in reversed(range(slices)):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + step * i]
        ds.save_as(folder / f"slice{i}.dcm")
    return folder, series


@pytest.fixture
def ct_series(tmp_path):
    return _series(tmp_path / "ct")


def _labels(shape):
    labels = np.zeros(shape, np.int32)
    labels[1:3, 30:60, 40:80] = 7
    labels[0, 80:100, 80:100] = 70_000  # beyond 16 bits: kept by the segment's label
    return labels


def test_seg_round_trip_keeps_positions_orientation_and_pixels(ct_series):
    folder, series = ct_series
    image = read_image(folder)
    labels = _labels(image.data.shape)
    out = write_seg(folder, labels, folder / "objects.dcm", {7: "1200 mm3, Dice 0.90"})
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    sources = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f)
               for f in image.metadata["files"]}  # fmt: skip
    assert seg.FrameOfReferenceUID == next(iter(sources.values())).FrameOfReferenceUID
    for frame in seg.PerFrameFunctionalGroupsSequence:  # each frame sits on its source slice
        source = sources[frame.DerivationImageSequence[0].SourceImageSequence[0]
                         .ReferencedSOPInstanceUID]  # fmt: skip
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in position],
                                   [float(v) for v in source.ImagePositionPatient])  # fmt: skip
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    np.testing.assert_allclose([float(v) for v in orientation.ImageOrientationPatient],
                               [float(v) for v in next(iter(sources.values()))
                                .ImageOrientationPatient])  # fmt: skip
    labels_back, descriptions, scale = read_seg(out)
    np.testing.assert_array_equal(labels_back, labels)
    assert descriptions == {7: "1200 mm3, Dice 0.90", 70_000: ""}
    assert scale == pytest.approx(image.scale)
    # The series still reads as the image: the SEG beside it is passed over.
    np.testing.assert_array_equal(read_image(folder).data, image.data)


def test_napari_opens_the_seg_as_labels_on_its_series_grid(ct_series):
    folder, _ = ct_series
    image = read_image(folder)
    labels = _labels(image.data.shape)
    out = write_seg(folder, labels, folder / "objects.dcm")
    [(data, meta, kind)] = napari_get_reader(str(out))(str(out))
    assert kind == "labels" and meta["scale"] == pytest.approx(image.scale)
    np.testing.assert_array_equal(data, labels)
    assert list(meta["features"]["index"]) == [0, 7, 70_000]


def test_labels_saved_from_napari_as_dcm_become_a_seg_of_their_series(tmp_path, ct_series):
    folder, series = ct_series
    [(data, meta, _)] = napari_get_reader(str(folder))(str(folder))
    labels = _labels(data.shape)
    [written] = napari_write_labels(str(tmp_path / "objects.dcm"), labels, meta)
    assert pydicom.dcmread(written).ReferencedSeriesSequence[0].SeriesInstanceUID == series
    np.testing.assert_array_equal(read_seg(written, folder)[0], labels)
    with pytest.raises(ImageError, match="come from no series: save them as NIfTI"):
        napari_write_labels(str(tmp_path / "x.dcm"), labels, {"metadata": {}})


def test_seg_of_another_series_and_bad_labels_are_refused(tmp_path, ct_series):
    folder, _ = ct_series
    shape = read_image(folder).data.shape
    out = write_seg(folder, _labels(shape), tmp_path / "objects.dcm")
    other, _ = _series(tmp_path / "other")
    shutil.copy(out, other / "objects.dcm")
    with pytest.raises(ImageError, match="belongs to series .* not in .*other"):
        read_seg(other / "objects.dcm")
    with pytest.raises(ImageError, match="labels has shape .* must match"):
        write_seg(folder, np.ones((2, 128, 128), np.int32), tmp_path / "x.dcm")
    with pytest.raises(ImageError, match="no object"):
        write_seg(folder, np.zeros(shape, np.int32), tmp_path / "x.dcm")
    with pytest.raises(ImageError, match="not a DICOM segmentation"):
        read_seg(folder / "slice0.dcm")


def test_a_seg_refers_to_the_series_it_was_drawn_on_of_two_in_a_folder(tmp_path, ct_series,
                                                                        monkeypatch):  # fmt: skip
    """Two series of as many slices in one folder (arterial and venous phases, say): labels
    drawn on the second, saved from napari or exported from one of its files, refer to it."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder, first = ct_series
    other, second = _series(tmp_path / "venous")
    for path in other.iterdir():
        shutil.copy(path, folder / f"venous_{path.name}")
    venous = str(folder / "venous_slice0.dcm")
    [(data, meta, _)] = napari_get_reader(venous)(venous)
    assert meta["metadata"]["series_uid"] == second != first
    labels = _labels(data.shape)
    [written] = napari_write_labels(str(tmp_path / "venous.dcm"), labels, meta)
    assert pydicom.dcmread(written).ReferencedSeriesSequence[0].SeriesInstanceUID == second
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    exported = tmp_path / "exported.dcm"
    assert main(["export", "--image", str(folder / "venous_slice1.dcm"), "--labels",
                 str(tmp_path / "labels.tif"), "--out", str(exported), "--no-measure"]) == 0
    assert pydicom.dcmread(exported).ReferencedSeriesSequence[0].SeriesInstanceUID == second


def test_export_on_the_command_line(tmp_path, ct_series, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    folder, series = ct_series
    image = read_image(folder)
    labels = _labels(image.data.shape)
    labels[labels == 70_000] = 3  # a NIfTI file holds these labels
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    seg_path = tmp_path / "out" / "objects.dcm"
    base = ["export", "--image", str(folder), "--labels", str(tmp_path / "labels.tif")]
    assert main([*base, "--out", str(seg_path), "--model", "demo"]) == 0
    labels_back, descriptions, _ = read_seg(seg_path, folder)
    np.testing.assert_array_equal(labels_back, labels)
    assert all("mm3" in d and "predicted Dice" in d for d in descriptions.values())
    nifti = tmp_path / "out" / "objects.nii.gz"
    assert main([*base, "--format", "nifti", "--out", str(nifti)]) == 0
    saved = nibabel.load(nifti)
    np.testing.assert_array_equal(np.transpose(np.asarray(saved.dataobj), (2, 1, 0)), labels)
    assert saved.header.get_zooms() == pytest.approx(tuple(reversed(image.scale)))

    (tmp_path / "a_file").write_text("")
    capsys.readouterr()
    blocked = str(tmp_path / "a_file" / "objects.dcm")
    assert main([*base, "--out", blocked, "--no-measure"]) == 2
    [kept] = (tmp_path / "tmp").glob("napari-active-sam-*/unsaved/*objects.dcm")
    assert str(kept) in capsys.readouterr().err
    assert pydicom.dcmread(kept).ReferencedSeriesSequence[0].SeriesInstanceUID == series
    shutil.copy(tmp_path / "labels.tif", tmp_path / "plain.tif")
    assert main(["export", "--image", str(tmp_path / "plain.tif"), "--labels",
                 str(tmp_path / "labels.tif"), "--out",
                 str(tmp_path / "new.dcm")]) == 2  # fmt: skip
    assert "not DICOM" in capsys.readouterr().err

    # Nothing the user has is written over: an existing file, an input, a wrong name.
    before = seg_path.read_bytes()
    for out, said in ((seg_path, "exists: choose a new file"),
                      (tmp_path / "labels.tif", "is one of this command's inputs"),
                      (tmp_path / "objects.nii.gz", "should end in .dcm")):  # fmt: skip
        assert main([*base, "--out", str(out), "--no-measure"]) == 2
        assert said in capsys.readouterr().err
    assert seg_path.read_bytes() == before
    assert main([*base, "--out", str(seg_path), "--no-measure", "--overwrite"]) == 0
    assert main(["export", "--image", str(tmp_path / "labels.tif"), "--labels",
                 str(tmp_path / "labels.tif"), "--format", "nifti", "--out",
                 str(tmp_path / "new.nii.gz")]) == 2  # fmt: skip
    assert "is the image itself" in capsys.readouterr().err


def test_seg_on_a_scanners_own_mr_series(tmp_path):
    """Two slices of a real MR series as the scanner wrote them (nibabel's test data): the
    SEG's frames sit at their source slices' positions and read back on their grid."""
    data = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"  # no import: it warns
    folder = tmp_path / "mr"
    folder.mkdir()
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(data / name, folder / name)
    image = read_image(folder)
    assert image.data.shape == (2, 256, 256) and image.scale[0] == pytest.approx(3.0, abs=1e-3)
    labels = np.zeros(image.data.shape, np.int32)
    labels[:, 100:140, 90:150] = 1
    labels[1, 20:40, 20:40] = 2
    out = write_seg(folder, labels, tmp_path / "mr_seg.dcm")
    seg = pydicom.dcmread(out)
    by_uid = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f)
              for f in image.metadata["files"]}  # fmt: skip
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = by_uid[frame.DerivationImageSequence[0].SourceImageSequence[0]
                        .ReferencedSOPInstanceUID]  # fmt: skip
        np.testing.assert_allclose(
            [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in source.ImagePositionPatient],
        )
    np.testing.assert_array_equal(read_seg(out, folder)[0], labels)


def test_a_seg_next_to_part_of_its_series_is_refused_and_one_more_image_is_empty(
    tmp_path, ct_series
):
    folder, series = ct_series
    shape = read_image(folder).data.shape
    labels = _labels(shape)
    out = write_seg(folder, labels, tmp_path / "objects.dcm")
    # An image of the series it was not drawn on: read, with no object on it.
    base = pydicom.dcmread(folder / "slice3.dcm")
    base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    x, y, z = (float(v) for v in base.ImagePositionPatient)
    base.ImagePositionPatient = [x, y, z + 5.0]
    base.InstanceNumber = 5
    base.save_as(folder / "slice4.dcm")
    back, _, _ = read_seg(out, folder)
    assert back.shape == (shape[0] + 1, *shape[1:])
    np.testing.assert_array_equal(back[:-1], labels)
    assert not back[-1].any()
    # Images it was drawn on missing: their objects would be lost, so it is refused.
    (folder / "slice4.dcm").unlink()
    (folder / "slice0.dcm").unlink()
    with pytest.raises(ImageError, match="1 of the 4 images objects.dcm was drawn on are not"):
        read_seg(out, folder)


def test_a_damaged_dicom_file_is_a_clear_error_in_napari(tmp_path, ct_series):
    folder, _ = ct_series
    damaged = folder / "slice0.dcm"
    data = bytearray(damaged.read_bytes())
    at = data.index(b"\x02\x00\x10\x00UI")  # the transfer syntax's value representation
    data[at + 4 : at + 6] = b"U8"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="damaged"):
        napari_get_reader(str(damaged))(str(damaged))


def test_a_seg_reads_past_a_damaged_file_in_its_series_folder(tmp_path, ct_series):
    folder, _ = ct_series
    labels = _labels(read_image(folder).data.shape)
    out = write_seg(folder, labels, folder / "objects.dcm")
    data = bytearray((folder / "slice0.dcm").read_bytes())
    at = data.index(b"\x02\x00\x10\x00UI")
    data[at + 4 : at + 6] = b"U8"
    (folder / "a-damaged.dcm").write_bytes(bytes(data))  # sorts before the series
    with pytest.warns(UserWarning, match="a-damaged.dcm"):
        back, _, _ = read_seg(out)
    np.testing.assert_array_equal(back, labels)


def test_a_seg_of_a_series_gone_or_without_a_patient_says_what_to_do(tmp_path, ct_series):
    folder, _ = ct_series
    [(data, meta, _)] = napari_get_reader(str(folder))(str(folder))
    labels = _labels(data.shape)
    moved = tmp_path / "moved"
    folder.rename(moved)
    with pytest.raises(ImageError, match="no longer in .*ct: put it back"):
        napari_write_labels(str(tmp_path / "objects.dcm"), labels, meta)
    for path in moved.glob("slice*.dcm"):  # a series exported without its patient's ID
        ds = pydicom.dcmread(path)
        del ds.PatientID
        ds.save_as(path)
    with pytest.raises(ImageError, match="lacks what a DICOM SEG copies from it"):
        write_seg(moved, labels, tmp_path / "objects.dcm")
    assert not (tmp_path / "objects.dcm").exists()
