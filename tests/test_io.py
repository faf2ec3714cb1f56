"""Readers on real files written by nibabel, tifffile and imageio."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import imageio.v3 as iio
import nibabel
import numpy as np
import pydicom
import pytest
import tifffile

from napari_active_sam.core.data.files import read_image, stem, write_labels
from napari_active_sam.core.errors import ImageError
from napari_active_sam.io import napari_get_reader


def test_nifti_volume_comes_back_slices_first_with_spacing(tmp_path):
    ijk = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    path = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(ijk, np.diag([0.7, 0.8, 2.5, 1.0])), path)
    image = read_image(path)
    assert image.data.shape == (3, 5, 4)
    assert image.scale == pytest.approx((2.5, 0.8, 0.7))
    assert image.data[2, 4, 3] == ijk[3, 4, 2]
    assert np.allclose(image.metadata["affine"], np.diag([0.7, 0.8, 2.5, 1.0]))


def test_a_nifti_voxel_size_of_0_is_no_voxel_size(tmp_path):
    """nibabel sets a pixdim of 0 to 1 as it loads; the file still states no size."""
    image = nibabel.Nifti1Image(np.zeros((6, 5, 4), np.int16), np.diag([0.7, 0.8, 2.5, 1.0]))
    image.header["pixdim"][3] = 0.0  # the slice spacing left unset
    path = tmp_path / "unset.nii.gz"
    nibabel.save(image, path)
    with pytest.warns(UserWarning, match="distances on screen are in voxels"):
        read = read_image(path)
    assert not read.spacing_known and read.scale == (1.0, 1.0, 1.0)
    assert read.data.shape == (4, 5, 6)


def test_tiff_stack_png_and_npy(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (5, 16, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    image = read_image(tmp_path / "stack.tif")
    assert np.array_equal(image.data, stack) and not image.rgb and image.scale == (1.0,) * 3
    assert not image.spacing_known  # a plain TIFF says nothing of its voxels
    rgb = np.zeros((8, 9, 3), np.uint8)
    iio.imwrite(tmp_path / "photo.png", rgb)
    assert read_image(tmp_path / "photo.png").rgb
    np.save(tmp_path / "arr.npy", stack[0])
    assert read_image(tmp_path / "arr.npy").data.shape == (16, 12)


def test_a_tiffs_imagej_or_ome_sizes_become_its_spacing_in_mm(tmp_path):
    stack = np.zeros((4, 8, 6), np.uint16)
    tifffile.imwrite(tmp_path / "ct.tif", stack, imagej=True, resolution=(1 / 0.8, 1 / 0.7),
                     metadata={"spacing": 2.5, "unit": "mm", "axes": "ZYX"})  # fmt: skip
    image = read_image(tmp_path / "ct.tif")
    assert image.spacing_known and image.scale == pytest.approx((2.5, 0.7, 0.8))
    tifffile.imwrite(tmp_path / "cells.ome.tif", stack, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 2.0,
    })  # fmt: skip
    image = read_image(tmp_path / "cells.ome.tif")  # OME's default unit: µm
    assert image.spacing_known and image.scale == pytest.approx((2e-3, 2.5e-4, 5e-4))
    tifffile.imwrite(tmp_path / "px.tif", stack[0], imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "pixel"})  # fmt: skip
    image = read_image(tmp_path / "px.tif")  # a unit that is no length: not a size
    assert not image.spacing_known and image.scale == (1.0, 1.0)
    # A stack with a pixel size but no slice spacing: its voxel size is not known.
    tifffile.imwrite(tmp_path / "flat.tif", stack, imagej=True, resolution=(1 / 0.8, 1 / 0.7),
                     metadata={"unit": "mm", "axes": "ZYX"})  # fmt: skip
    image = read_image(tmp_path / "flat.tif")
    assert not image.spacing_known and image.scale == pytest.approx((1.0, 0.7, 0.8))
    tifffile.imwrite(tmp_path / "flat.tif", stack[0], imagej=True, resolution=(1 / 0.8, 1 / 0.7),
                     metadata={"unit": "mm"})  # fmt: skip
    assert read_image(tmp_path / "flat.tif").spacing_known  # one slice needs no spacing


def test_broken_and_unknown_files_raise_image_error(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti at all")
    with pytest.raises(ImageError, match="not a readable NIfTI"):
        read_image(broken)
    with pytest.raises(ImageError, match="unknown image type"):
        (tmp_path / "notes.txt").write_text("x")
        read_image(tmp_path / "notes.txt")
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "absent.tif")


def test_napari_reader_contribution(tmp_path):
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, np.zeros((2, 4, 4), np.uint8))
    reader = napari_get_reader(str(path))
    [(data, meta, kind)] = reader(str(path))
    assert kind == "image" and meta["name"] == "vol" and data.shape == (2, 4, 4)
    assert napari_get_reader(str(tmp_path / "x.csv")) is None
    assert stem("a/b/ct.nii.gz") == "ct"


def test_dicom_series_sorted_by_position_in_hounsfield_units(tmp_path, dicom_slice):
    folder = tmp_path / "series"
    folder.mkdir()
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2000, (4, 6, 5)).astype(np.uint16)
    for name, z in zip("dbca", [7.5, 0.0, 5.0, 2.5], strict=True):  # files out of order
        dicom_slice(folder / f"{name}.dcm", "1.2.3.4", z, stored[int(z / 2.5)])
    (folder / "README.txt").write_text("not DICOM")
    image = read_image(folder)
    assert image.data.shape == (4, 6, 5) and image.data.dtype == np.int16
    assert np.array_equal(image.data, stored.astype(np.int32) * 2 - 1024)
    assert image.scale == pytest.approx((2.5, 0.6, 0.7))
    assert image.metadata["modality"] == "CT"


def _two_series(folder, dicom_slice):
    """Three slices of series 1.1 (a*.dcm) and two of series 2.2 (b*.dcm) in one folder."""
    folder.mkdir()
    for i in range(3):
        dicom_slice(folder / f"a{i}.dcm", "1.1", i * 2.0, np.full((4, 4), 100 + i))
    for i in range(2):
        dicom_slice(folder / f"b{i}.dcm", "2.2", i * 2.0, np.full((4, 4), 7))
    return folder


def test_dicom_folder_with_mixed_series_reads_the_largest_and_says_so(tmp_path, dicom_slice):
    folder = _two_series(tmp_path / "mixed", dicom_slice)
    with pytest.warns(UserWarning, match="holds 2 DICOM series; reading the largest"):
        image = read_image(folder)
    assert image.data.shape == (3, 4, 4) and image.metadata["other_series"] == {"2.2": 2}
    with pytest.raises(ImageError, match="no readable DICOM image"):
        read_image(tmp_path)  # a folder of folders


def test_nifti_with_a_broken_header_is_refused(tmp_path):
    path = tmp_path / "broken.nii"
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    raw[42:44] = (1000).to_bytes(2, "little")  # dim[1]: far more voxels than the file holds
    path.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="the file is truncated or damaged"):
        read_image(path)


def test_labels_written_back_to_nifti_keep_the_source_grid(tmp_path):
    affine = np.array([[0.7, 0, 0, -10], [0, 0.8, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    source = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((5, 6, 3), np.int16), affine), source)
    image = read_image(source)
    labels = np.zeros(image.data.shape, np.int32)
    labels[1, 2:4, 1:3] = 7
    out = write_labels(tmp_path / "labels.nii.gz", labels, image.metadata)
    written = nibabel.load(out)
    assert np.allclose(written.affine, affine)
    assert written.shape == (5, 6, 3)
    assert np.asarray(written.dataobj)[1, 2, 1] == 7 and np.asarray(written.dataobj).sum() == 28
    assert np.array_equal(read_image(out).data, labels)


def test_labels_written_to_tiff_and_bad_targets(tmp_path):
    labels = np.zeros((2, 5, 5), np.uint16)
    labels[0, 1:3, 1:3] = 40000
    out = write_labels(tmp_path / "labels.tif", labels)
    assert np.array_equal(tifffile.imread(out), labels.astype(np.int32))
    with pytest.raises(ImageError, match="whole numbers"):
        write_labels(tmp_path / "x.tif", labels.astype(float))
    with pytest.raises(ImageError, match="write labels as"):
        write_labels(tmp_path / "x.png", labels)


def test_napari_writer_contribution_keeps_the_nifti_grid(tmp_path):
    from napari_active_sam.io import napari_write_labels

    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    source = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 5, 2), np.int16), affine), source)
    [(data, meta, _)] = napari_get_reader(str(source))(str(source))
    labels = np.zeros(data.shape, np.int32)
    labels[1, 0, 3] = 2
    [written] = napari_write_labels(str(tmp_path / "out.nii.gz"), labels, meta)
    image = nibabel.load(written)
    assert np.allclose(image.affine, affine) and np.asarray(image.dataobj)[3, 0, 1] == 2


def test_a_save_that_fails_part_way_leaves_the_file_there_whole(tmp_path, monkeypatch):
    """A full disk part way through: the labels saved before stay as they were, no partial
    file is left beside them, and the new ones are kept where the error says."""
    from napari_active_sam.core import keeping
    from napari_active_sam.core.errors import SaveError
    from napari_active_sam.io import napari_write_labels

    monkeypatch.setattr(keeping, "fallback_dir", lambda: tmp_path / "kept")
    source = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 5, 2), np.int16), np.eye(4)), source)
    [(data, meta, _)] = napari_get_reader(str(source))(str(source))
    before = np.zeros(data.shape, np.int32)
    before[0, 1, 1] = 3
    saved = tmp_path / "labels"
    saved.mkdir()
    [first] = napari_write_labels(str(saved / "objects.nii.gz"), before, meta)
    real_save = nibabel.save

    def disk_full(image, filename):
        if "kept" not in str(filename):
            Path(filename).write_bytes(b"\x1f\x8b half a file")
            raise OSError(28, "No space left on device")
        real_save(image, filename)

    monkeypatch.setattr(nibabel, "save", disk_full)
    with pytest.raises(SaveError, match="No space left on device.*it is kept in") as failed:
        napari_write_labels(first, before + 1, meta)
    np.testing.assert_array_equal(read_image(first).data, before)
    assert sorted(p.name for p in saved.iterdir()) == ["objects.nii.gz"]
    kept = Path(str(failed.value).split("it is kept in ")[1].split(": copy")[0])
    np.testing.assert_array_equal(read_image(kept).data, before + 1)


def test_labels_are_written_on_their_images_grid_in_full(tmp_path):
    from napari_active_sam.io import napari_write_labels

    source = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((6, 8, 3), np.int16), np.eye(4)), source)
    [(data, meta, _)] = napari_get_reader(str(source))(str(source))
    with pytest.raises(ImageError, match=r"shape \(3, 4, 6\), not the image's \(3, 8, 6\)"):
        napari_write_labels(str(tmp_path / "half.nii.gz"), np.zeros((3, 4, 6), np.int32), meta)
    huge = np.zeros(data.shape, np.int64)
    huge[1, 2, 3] = 2**33  # past 32 bits: NIfTI is told its type
    [written] = napari_write_labels(str(tmp_path / "huge.nii.gz"), huge, meta)
    np.testing.assert_array_equal(read_image(written).data, huge)
    full = np.zeros(data.shape, np.int32)
    full[:, :4, :] = 5
    pyramid = {**meta, "multiscale": True}  # a multiscale layer: its full resolution
    [written] = napari_write_labels(str(tmp_path / "full.nii.gz"), [full, full[:, ::2, ::2]],
                                    pyramid)  # fmt: skip
    np.testing.assert_array_equal(read_image(written).data, full)


def test_tiff_labels_keep_their_images_voxel_size(tmp_path):
    from napari_active_sam.io import napari_write_labels

    stack = tmp_path / "cells.tif"
    tifffile.imwrite(stack, np.zeros((3, 8, 6), np.uint16), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 4.0,
                                                      "unit": "um"})  # fmt: skip
    [(data, meta, _)] = napari_get_reader(str(stack))(str(stack))
    labels = np.zeros(data.shape, np.int32)
    labels[1, 2:4, 2:4] = 9
    [written] = napari_write_labels(str(tmp_path / "cells_labels.tif"), labels, meta)
    back = read_image(written)
    assert back.spacing_known and back.scale == pytest.approx((0.004, 0.0005, 0.0005))
    np.testing.assert_array_equal(back.data, labels)


def test_dicom_folder_through_the_napari_reader(tmp_path, dicom_slice):
    folder = tmp_path / "series"
    folder.mkdir()
    for z in range(3):
        dicom_slice(folder / f"{z}.dcm", "9.9", z * 3.0, np.full((4, 4), 10 * z))
    [(data, meta, kind)] = napari_get_reader(str(folder))(str(folder))
    assert kind == "image" and data.shape == (3, 4, 4) and meta["scale"] == (3.0, 0.6, 0.7)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path / "notes")) is None
    # Copied from macOS: an AppleDouble "._" file beside each image, sorted first.
    mac = tmp_path / "from-a-mac"
    mac.mkdir()
    for z in range(25):
        dicom_slice(mac / f"IM{z:04d}", "9.8", z * 3.0, np.full((4, 4), z))
        (mac / f"._IM{z:04d}").write_bytes(b"\0\x05\x16\x07" + b"\0" * 60)
    [(data, _, _)] = napari_get_reader(str(mac))(str(mac))
    assert data.shape == (25, 4, 4)


def test_4d_nifti_puts_time_first_and_keeps_the_image_plane_last(tmp_path):
    data = np.zeros((6, 5, 4, 3), np.int16)  # (i, j, k, t)
    data[1, 2, 3, 2] = 9
    path = tmp_path / "fmri.nii.gz"
    image = nibabel.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header.set_zooms((2.0, 2.0, 3.0, 1.5))
    nibabel.save(image, path)
    read = read_image(path)
    assert read.data.shape == (3, 4, 5, 6) and read.data[2, 3, 2, 1] == 9
    assert read.scale == pytest.approx((1.5, 3.0, 2.0, 2.0))


def test_a_dicom_file_opens_its_own_series_and_mixed_series_are_named(tmp_path, dicom_slice):
    import pydicom

    folder = _two_series(tmp_path / "study", dicom_slice)

    for i in range(2):  # a described series, as scanners write them
        ds = pydicom.dcmread(folder / f"b{i}.dcm")
        ds.SeriesDescription = "COR T2"
        ds.save_as(folder / f"b{i}.dcm")
    with pytest.warns(UserWarning, match=r'leaving "COR T2" \(2 slices\)'):
        read_image(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the user chose this series: nothing to warn about
        image = read_image(folder / "b1.dcm")
    assert image.data.shape == (2, 4, 4) and image.metadata["series_uid"] == "2.2"
    [(data, meta, _)] = napari_get_reader(str(folder / "a0.dcm"))(str(folder / "a0.dcm"))
    assert data.shape == (3, 4, 4) and meta["scale"] == (2.0, 0.6, 0.7)
    (folder / "notes.dcm").write_text("not DICOM")
    with pytest.raises(ImageError, match="notes.dcm is not a DICOM image"):
        read_image(folder / "notes.dcm")


def _series(folder, dicom_slice, depths, **elements):
    """Slices at ``depths`` (mm along z), pixels equal to their depth, files named IMG1…"""
    folder.mkdir()
    for i, z in enumerate(depths, start=1):
        extra = {k: (v(i, z) if callable(v) else v) for k, v in elements.items()}
        dicom_slice(folder / f"IMG{i}", "7.7", z, np.full((4, 4), int(z * 10)), slope=1.0,
                    intercept=0.0, **extra)  # fmt: skip
    return folder


def test_dicom_without_positions_is_ordered_by_instance_number(tmp_path, dicom_slice):
    # File names sort as text IMG1, IMG10, IMG11, IMG12, IMG2…; the numbers tell the order.
    folder = _series(tmp_path / "s", dicom_slice, [float(i) for i in range(12)],
                     ImagePositionPatient=None, InstanceNumber=lambda i, z: 13 - i)  # fmt: skip
    with pytest.warns(UserWarning, match="ordered by InstanceNumber, 2.5 mm apart"):
        image = read_image(folder)
    assert list(image.data[:, 0, 0]) == [10 * i for i in reversed(range(12))]
    assert image.scale[0] == 2.5  # SliceThickness, the only spacing stated


def test_dicom_without_positions_or_numbers_is_refused(tmp_path, dicom_slice):
    folder = _series(tmp_path / "s", dicom_slice, [0.0, 1.0, 2.0], ImagePositionPatient=None)
    with pytest.raises(ImageError, match="order is unknown"):
        read_image(folder)
    # One slice missing its position does not land at the origin: the order is refused.
    folder = _series(tmp_path / "t", dicom_slice, [0.0, 1.0, 2.0],
                     ImagePositionPatient=lambda i, z: None if i == 2 else [0, 0, z])  # fmt: skip
    with pytest.raises(ImageError, match="order is unknown"):
        read_image(folder)


def test_dicom_orientations_and_sizes_are_split_not_stacked(tmp_path, dicom_slice):
    folder = _series(tmp_path / "s", dicom_slice, [0.0, 2.0, 4.0])
    for i in range(2):  # two sagittal localisers in the same series
        dicom_slice(folder / f"LOC{i}", "7.7", 0, np.zeros((4, 4)),
                    ImageOrientationPatient=[0, 1, 0, 0, 0, -1],
                    ImagePositionPatient=[float(i), 0, 0])  # fmt: skip
    dicom_slice(folder / "BIG", "7.7", 9.0, np.zeros((6, 6)))  # another size
    with pytest.warns(UserWarning, match="3 image.s. of this series have another orientation"):
        image = read_image(folder)
    assert image.data.shape == (3, 4, 4) and list(image.data[:, 0, 0]) == [0, 20, 40]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        localiser = read_image(folder / "LOC1")  # the user asked for that one: no warning
    assert localiser.data.shape == (2, 4, 4)


def test_dicom_duplicate_positions(tmp_path, dicom_slice):
    import shutil

    folder = _series(tmp_path / "s", dicom_slice, [0.0, 2.0, 4.0])
    shutil.copy(folder / "IMG2", folder / "IMG2 copy")  # the same image twice
    with pytest.warns(UserWarning, match="1 file.s. are copies of another slice"):
        assert read_image(folder).data.shape == (3, 4, 4)
    dicom_slice(folder / "ECHO2", "7.7", 2.0, np.ones((4, 4)))  # another image at 2 mm
    with pytest.raises(ImageError, match="different images at the same position"):
        read_image(folder)


def test_dicom_spacing_from_positions_checked(tmp_path, dicom_slice):
    folder = _series(tmp_path / "s", dicom_slice, [0.0, 3.0, 6.0, 12.0, 15.0])
    with pytest.warns(UserWarning, match="unevenly spaced .6 mm between IMG3 and IMG4"):
        assert read_image(folder).scale[0] == 3.0
    folder = _series(tmp_path / "t", dicom_slice, [0.0, 3.0, 6.0], SpacingBetweenSlices=1.0)
    with pytest.warns(UserWarning, match="SpacingBetweenSlices says 1 mm"):
        assert read_image(folder).scale[0] == 3.0


@pytest.mark.parametrize(
    ("elements", "message"),
    [
        ({"PixelData": b"\0\0"}, "pixel data cannot be decoded|pixels have shape"),
        ({"RescaleSlope": "nan"}, "RescaleSlope"),
        ({"Rows": 0}, "only damaged DICOM files: a.dcm"),
        ({"ImageOrientationPatient": [1, 0, 0, 0, 1, 0, 0]}, "only damaged DICOM files: a.dcm"),
        ({"ImageOrientationPatient": [1, 0, 0, 0, 1]}, "only damaged DICOM files: a.dcm"),
        ({"ImagePositionPatient": [0, 0]}, "only damaged DICOM files: a.dcm"),
        ({"PixelSpacing": [0.7, 0.7, 0.7]}, "only damaged DICOM files: a.dcm"),
    ],
)
def test_damaged_dicom_is_a_clear_error(tmp_path, dicom_slice, elements, message):
    folder = tmp_path / "s"
    folder.mkdir()
    dicom_slice(folder / "a.dcm", "1.1", 0.0, np.zeros((4, 4)), **elements)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the folder-level warning about the damaged file
        with pytest.raises(ImageError, match=message):
            read_image(folder if "damaged" in message else folder / "a.dcm")


def test_16_bit_colour_dicom_is_scaled_to_8_bits_not_wrapped(tmp_path, dicom_slice):
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 0] = 65280  # nearly full red (256 × 255: 0 if wrapped to 8 bits)
    rgb[1, :, 1] = 32768  # half green on one row
    path = tmp_path / "rgb.dcm"
    dicom_slice(path, "1.1", 0.0, np.zeros((4, 4)), SamplesPerPixel=3,
                PhotometricInterpretation="RGB", PlanarConfiguration=0,
                PixelData=rgb.tobytes())  # fmt: skip
    image = read_image(path)
    assert image.data.dtype == np.uint8 and image.data.shape[-1] == 3
    assert (image.data[..., 0] == 254).all() and (image.data[..., 2] == 0).all()
    assert (image.data[..., 1, :, 1] == 128).all() and (image.data[..., 0, :, 1] == 0).all()


def test_monochrome1_is_turned_round_and_a_palette_gives_colour(tmp_path, dicom_slice):
    """A radiograph stored white-low (MONOCHROME1) shows as its viewer shows it; PALETTE
    COLOR (ultrasound) goes through its palette."""
    stored = np.array([[0, 100], [4095, 2000]])
    path = tmp_path / "cr.dcm"
    dicom_slice(path, "1.1", 0.0, stored, slope=1.0, intercept=0.0, BitsStored=12, HighBit=11,
                PhotometricInterpretation="MONOCHROME1")  # fmt: skip
    np.testing.assert_array_equal(read_image(path).data, 4095 - stored)
    index = np.array([[10, 200], [0, 255]], np.uint8)
    ramp = np.arange(256, dtype=np.uint16) * 257
    lut = {f"{c}PaletteColorLookupTable{part}": value for c, data in
           (("Red", ramp), ("Green", np.zeros(256, np.uint16)), ("Blue", ramp[::-1]))
           for part, value in (("Descriptor", [256, 0, 16]), ("Data", data.tobytes()))}
    path = tmp_path / "us.dcm"
    dicom_slice(path, "1.2", 0.0, np.zeros((2, 2)), PhotometricInterpretation="PALETTE COLOR",
                BitsAllocated=8, BitsStored=8, HighBit=7, PixelData=index.tobytes(),
                **lut)  # fmt: skip
    image = read_image(path)
    assert image.rgb and image.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data[..., 0], index)
    np.testing.assert_array_equal(image.data[..., 2], 255 - index)
    assert not image.data[..., 1].any()


def test_bad_pixel_spacing_is_replaced_and_said(tmp_path, dicom_slice):
    folder = _series(tmp_path / "s", dicom_slice, [0.0, 2.0], PixelSpacing=[0.0, 0.7])
    with pytest.warns(UserWarning, match="PixelSpacing .* is not a positive size"):
        assert read_image(folder).scale == (2.0, 1.0, 1.0)


def test_header_bombs_are_refused_before_allocation(tmp_path):
    import gzip
    import tracemalloc

    header = nibabel.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.int16)
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb") as handle:  # a header and no voxels: tens of bytes on disk
        handle.write(header.binaryblock + b"\0" * 4)
    npy = tmp_path / "bomb.npy"
    with open(npy, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f8", "fortran_order": False, "shape": (50_000, 50_000)}
        )
    tracemalloc.start()
    for path in (bomb, npy):
        with pytest.raises(ImageError, match="claims .* GB of image"):
            read_image(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20


def test_nan_voxel_size_becomes_one_with_a_warning(tmp_path):
    path = tmp_path / "nan.nii"
    image = nibabel.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4))
    image.header["pixdim"][1:4] = [np.nan, 1.0, np.inf]
    nibabel.save(image, path)
    with pytest.warns(UserWarning, match="voxel size .* is not a positive size"):
        assert read_image(path).scale == (1.0, 1.0, 1.0)


def test_empty_tiff_and_damaged_png_and_npy(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"II*\0\0\0\0\0")  # a header with no page
    png = tmp_path / "cut.png"
    iio.imwrite(png, np.zeros((20, 20), np.uint8))
    png.write_bytes(png.read_bytes()[:40])
    npy = tmp_path / "cut.npy"
    np.save(npy, np.zeros((20, 20)))
    npy.write_bytes(npy.read_bytes()[:200])
    for path in (tmp_path / "empty.tif", png, npy):
        with pytest.raises(ImageError, match=path.name):
            read_image(path)


def test_zero_slope_and_unusable_positions_are_refused(tmp_path, dicom_slice):
    folder = _series(tmp_path / "s", dicom_slice, [0.0, 2.0], RescaleSlope=0)
    with pytest.raises(ImageError, match="RescaleSlope 0.0"):
        read_image(folder)
    for name, element in [("nan", {"ImagePositionPatient": [0, 0, float("nan")]}),
                          ("flat", {"ImageOrientationPatient": [0, 0, 0, 0, 0, 0]})]:  # fmt: skip
        folder = _series(tmp_path / name, dicom_slice, [0.0, 2.0], **element)
        with pytest.raises(ImageError, match="no usable ImagePositionPatient"):
            read_image(folder)


def test_a_tiff_whose_page_has_no_entries_is_refused(tmp_path):
    path = tmp_path / "hollow.tif"
    path.write_bytes(b"II*\0" + (8).to_bytes(4, "little") + b"\0\0" + b"\0" * 4)  # 0 entries
    with pytest.raises(ImageError, match="hollow.tif"):
        read_image(path)


def test_an_image_too_big_to_read_whole_converts_and_opens_lazily(tmp_path, monkeypatch):
    """Over the allowance, reading says how to go lazy; `convert` does it slice by slice
    (never over the allowance) and the OME-Zarr copy opens lazily, voxels and sizes kept."""
    from napari_active_sam.cli.main import main
    from napari_active_sam.core.data import image as image_module

    volume = np.random.default_rng(0).integers(-1000, 1000, (128, 96, 64)).astype(np.int16)
    path = tmp_path / "big.nii.gz"  # 1.5 MiB of voxels, over a 1 MiB allowance
    nibabel.save(nibabel.Nifti1Image(volume, np.diag([0.7, 0.8, 2.5, 1.0])), path)
    monkeypatch.setattr(image_module, "MAX_IMAGE_BYTES", 2**20)
    with pytest.raises(ImageError, match=r"does not fit read whole\. Open it lazily.*"
                                         r"napari-active-sam convert big\.nii\.gz"):  # fmt: skip
        read_image(path)
    out = tmp_path / "big.ome.zarr"
    assert main(["convert", str(path), "--out", str(out)]) == 0
    lazy = read_image(out)
    assert not isinstance(lazy.data, np.ndarray) and lazy.scale == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_array_equal(np.asarray(lazy.data[30]), volume[:, :, 30].T)
    tiff = tmp_path / "stack.tif"
    tifffile.imwrite(tiff, volume[:8], photometric="minisblack")
    assert main(["convert", str(tiff), "--out", str(tmp_path / "stack.ome.zarr")]) == 0
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "stack.ome.zarr").data),
                                  volume[:8])  # fmt: skip


def test_a_voxel_size_assumed_is_not_counted_as_known(tmp_path, dicom_slice):
    """Where a reader puts 1.0 in place of a size the file does not state, or states as no
    size, the image says its spacing is unknown, so measuring warns rather than reporting
    voxels as mm³. A 4D NIfTI's time step of 0 leaves its spatial sizes alone."""
    bare = _series(tmp_path / "bare", dicom_slice, [0.0, 2.5], PixelSpacing=None)
    image = read_image(bare)
    assert image.scale == (2.5, 1.0, 1.0) and not image.spacing_known
    assert read_image(_series(tmp_path / "sized", dicom_slice, [0.0, 2.5])).spacing_known
    with pytest.warns(UserWarning, match="not a positive size"):
        zero = read_image(_series(tmp_path / "zero", dicom_slice, [0.0, 2.0],
                                  PixelSpacing=[0.0, 0.7]))  # fmt: skip
    assert not zero.spacing_known

    timed = nibabel.Nifti1Image(np.zeros((4, 5, 3, 2), np.int16), np.eye(4))
    timed.header.set_zooms((0.5, 0.6, 2.0, 0.0))
    nibabel.save(timed, tmp_path / "timed.nii.gz")
    image = read_image(tmp_path / "timed.nii.gz")
    assert image.scale == pytest.approx((1.0, 2.0, 0.6, 0.5)) and image.spacing_known
    nan = nibabel.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4))
    nan.header["pixdim"][1:4] = [np.nan, 1.0, 1.0]
    nibabel.save(nan, tmp_path / "nan.nii")
    with pytest.warns(UserWarning, match="not a positive size"):
        assert not read_image(tmp_path / "nan.nii").spacing_known


def test_an_enhanced_dicoms_pixel_size_comes_from_its_functional_groups(tmp_path, dicom_slice):
    from pydicom.dataset import Dataset

    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.4]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    folder = _series(tmp_path / "enhanced", dicom_slice, [0.0, 2.0], PixelSpacing=None,
                     SharedFunctionalGroupsSequence=[shared])  # fmt: skip
    image = read_image(folder)
    assert image.scale == pytest.approx((2.0, 0.5, 0.4)) and image.spacing_known


def test_labels_saved_as_nifti_keep_a_dicom_or_tiff_images_voxel_size(tmp_path, dicom_slice):
    """From napari: labels on a DICOM series saved as NIfTI carry the series' voxel size
    (the reader's layer scale), into a folder that does not exist yet."""
    from napari_active_sam.io import napari_write_labels

    folder = _series(tmp_path / "ct", dicom_slice, [0.0, 2.5, 5.0])
    [(data, meta, _)] = napari_get_reader(str(folder))(str(folder))
    labels = np.zeros(data.shape, np.int32)
    labels[1, 2, 3] = 4
    target = tmp_path / "new" / "folder" / "ct_labels.nii.gz"
    [written] = napari_write_labels(str(target), labels, meta)
    image = nibabel.load(written)
    assert image.header.get_zooms() == pytest.approx((0.7, 0.6, 2.5))
    assert np.asarray(image.dataobj)[3, 2, 1] == 4
    # Where the series lies in the patient: a voxel's NIfTI (RAS) position is its DICOM
    # (LPS) one, x and y turned round (the series is shifted and tilted to show it).
    tilted = _series(tmp_path / "tilted", dicom_slice, [0.0, 2.5, 5.0],
                     ImageOrientationPatient=[0, 1, 0, 0, 0, -1])  # fmt: skip
    for path in tilted.iterdir():  # sagittal slices, stacked along x from x = -40 mm
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [-40.0 + float(ds.ImagePositionPatient[2]), 10.0, 20.0]
        ds.save_as(path)
    [(data, meta, _)] = napari_get_reader(str(tilted))(str(tilted))
    [written] = napari_write_labels(str(tmp_path / "tilted.nii.gz"), labels, meta)
    image = nibabel.load(written)
    column, row = 3, 2
    for z, file in enumerate(meta["metadata"]["files"]):  # the slices in volume order
        corner = np.array([float(v) for v in pydicom.dcmread(file).ImagePositionPatient])
        lps = corner + column * 0.7 * np.array([0, 1, 0]) + row * 0.6 * np.array([0, 0, -1])
        ras = image.affine @ [column, row, z, 1]
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-6)
    assert np.asarray(image.dataobj)[column, row, 1] == 4


def test_a_dicom_series_too_big_to_read_says_what_can_be_done(tmp_path, dicom_slice,
                                                              monkeypatch):  # fmt: skip
    """`convert` takes TIFF and NIfTI only, so a DICOM series over the allowance is not
    told to convert."""
    from napari_active_sam.core.data import image as image_module

    folder = _series(tmp_path / "ct", dicom_slice, [0.0, 2.5, 5.0])
    monkeypatch.setattr(image_module, "MAX_IMAGE_BYTES", 64)
    with pytest.raises(ImageError, match="does not fit read whole") as refused:
        read_image(folder)
    assert "convert" not in str(refused.value)
    assert "NAPARI_ACTIVE_SAM_MAX_IMAGE_GB" in str(refused.value)


def test_a_tiff_is_read_by_the_axes_it_states(tmp_path):
    """Planar RGB comes back as colour, not three slices; 8-bit grey slices three pixels wide
    are not taken for colour; channels are refused, saying how to split them; an ImageJ
    hyperstack of one channel keeps its z size on its slices; a file of two images reads
    the first and says so."""
    planar = np.arange(3 * 8 * 6, dtype=np.uint8).reshape(3, 8, 6)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    image = read_image(tmp_path / "planar.tif")
    assert image.rgb and image.data.shape == (8, 6, 3)
    np.testing.assert_array_equal(image.data[..., 1], planar[1])

    narrow = np.zeros((10, 64, 3), np.uint8)
    tifffile.imwrite(tmp_path / "narrow.tif", narrow, photometric="minisblack")
    image = read_image(tmp_path / "narrow.tif")
    assert not image.rgb and image.data.shape == (10, 64, 3) and len(image.scale) == 3

    two = np.zeros((5, 2, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "two.tif", two, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 3.0, "unit": "um"})  # fmt: skip
    with pytest.raises(ImageError, match="2 channels .*Split Channels"):
        read_image(tmp_path / "two.tif")
    tifffile.imwrite(tmp_path / "one.tif", two[:, :1], imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZCYX", "spacing": 3.0, "unit": "um"})  # fmt: skip
    image = read_image(tmp_path / "one.tif")
    assert image.data.shape == (5, 16, 16) and image.scale == pytest.approx((3e-3, 5e-4, 5e-4))

    tifffile.imwrite(tmp_path / "pair.tif", np.ones((16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "pair.tif", np.zeros((8, 8), np.uint8), append=True)
    with pytest.warns(UserWarning, match="holds 2 images; the first .16, 16. is read"):
        assert read_image(tmp_path / "pair.tif").data.shape == (16, 16)


def test_the_reader_claims_only_what_it_opens(tmp_path):
    """A zarr group that is no OME-Zarr image, and a TIFF of several channels, are left to
    napari's other readers; an OME-Zarr image and a one-channel TIFF are claimed."""
    import zarr
    from ome_zarr.writer import write_image

    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("data", shape=(4, 4), dtype="u1")
    assert napari_get_reader(str(plain)) is None
    image = tmp_path / "image.ome.zarr"
    write_image(np.zeros((2, 16, 16), np.uint8), zarr.open_group(str(image), mode="w"),
                axes="zyx", scale_factors=())  # fmt: skip
    assert callable(napari_get_reader(str(image)))
    channels = np.zeros((3, 2, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "two.tif", channels, imagej=True, metadata={"axes": "ZCYX"})
    assert napari_get_reader(str(tmp_path / "two.tif")) is None
    tifffile.imwrite(tmp_path / "one.tif", channels[:, :1], imagej=True,
                     metadata={"axes": "ZCYX"})  # fmt: skip
    assert callable(napari_get_reader(str(tmp_path / "one.tif")))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="needs a POSIX user that file modes apply to")  # fmt: skip
def test_a_folder_that_cannot_be_listed_is_not_claimed(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        assert napari_get_reader(str(locked)) is None
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("name", ["big.tif", "big.nii.gz"])
def test_labels_past_the_signed_32_bit_range_are_written_as_they_are(tmp_path, name):
    labels = np.array([[[0, 40_000], [70_000, 2**31 + 5]]], np.uint32)
    written = write_labels(tmp_path / name, labels)
    np.testing.assert_array_equal(read_image(written).data.reshape(labels.shape), labels)


def test_a_truncated_tiff_stack_is_refused_not_read_as_its_first_slice(tmp_path):
    stack = np.random.default_rng(0).integers(0, 1000, (10, 64, 64)).astype(np.uint16)
    imagej, shaped = tmp_path / "imagej.tif", tmp_path / "shaped.tif"
    tifffile.imwrite(imagej, stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(shaped, stack[:5], compression="zlib")
    for path, count in ((imagej, 10), (shaped, 5)):
        assert read_image(path).data.shape[0] == count
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) * 6 // 10])  # a copy cut short
        with pytest.raises(ImageError, match=f"states {count} images but holds 1: the file is "
                                             "truncated"):  # fmt: skip
            read_image(path)


def test_a_one_bit_mask_tiff_is_read_and_a_cut_one_refused(tmp_path):
    mask = np.zeros((256, 256), bool)
    mask[50:100, 60:120] = True
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, mask)  # bilevel: 1 bit a pixel, 8 kB for 64 k pixels
    read = read_image(path).data
    assert read.dtype == bool and np.array_equal(read, mask)
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(ImageError, match="truncated or damaged"):
        read_image(path)


def test_tiff_colour_of_other_sample_types_and_counts(tmp_path):
    """16-bit RGB is brought to 8 bits, not taken for a volume of three-pixel-wide slices;
    grey with alpha keeps its grey; float colour and five samples are refused, saying what
    to save."""
    rgb16 = np.zeros((16, 8, 3), np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = 32768
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    image = read_image(tmp_path / "rgb16.tif")
    assert image.rgb and image.data.dtype == np.uint8 and image.data.shape == (16, 8, 3)
    assert image.data[0, 0].tolist() == [255, 128, 0] and len(image.scale) == 2
    grey = np.random.default_rng(1).integers(0, 255, (16, 8, 2)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "alpha.tif", grey, photometric="minisblack", extrasamples=[1],
                     planarconfig="contig")  # fmt: skip
    image = read_image(tmp_path / "alpha.tif")
    assert not image.rgb and image.data.shape == (16, 8)
    np.testing.assert_array_equal(image.data, grey[..., 0])
    tifffile.imwrite(tmp_path / "float.tif", np.ones((16, 8, 3), np.float32), photometric="rgb")
    with pytest.raises(ImageError, match="colour of float32 samples: save it as 8-bit RGB"):
        read_image(tmp_path / "float.tif")
    tifffile.imwrite(tmp_path / "five.tif", np.ones((16, 8, 5), np.uint8), photometric="rgb",
                     extrasamples=[0, 0])  # fmt: skip
    with pytest.raises(ImageError, match="5 samples per pixel"):
        read_image(tmp_path / "five.tif")


def test_what_napari_cannot_show_is_refused_and_packed_rgb_is_colour(tmp_path):
    complex_nifti, complex_tiff = tmp_path / "complex.nii", tmp_path / "complex.tif"
    values = np.full((4, 4, 3), 1 + 2j, np.complex64)
    nibabel.save(nibabel.Nifti1Image(values, np.eye(4)), complex_nifti)
    tifffile.imwrite(complex_tiff, values[..., 0])
    row = tmp_path / "row.nii"
    nibabel.save(nibabel.Nifti1Image(np.arange(8, dtype=np.int16), np.eye(4)), row)
    for path, message in ((complex_nifti, "complex values: save their magnitude"),
                          (complex_tiff, "complex values"),
                          (row, r"a single row of 8 values \(8,\)")):  # fmt: skip
        with pytest.raises(ImageError, match=message):
            napari_get_reader(str(path))(str(path))
    packed = np.zeros((5, 4, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    packed["G"] = 7
    nibabel.save(nibabel.Nifti1Image(packed, np.eye(4)), tmp_path / "rgb24.nii")
    [(data, meta, kind)] = napari_get_reader(str(tmp_path / "rgb24.nii"))(
        str(tmp_path / "rgb24.nii"))  # fmt: skip
    assert kind == "image" and meta["rgb"] and data.dtype == np.uint8
    assert data.shape == (3, 4, 5, 3) and (data[..., 1] == 7).all() and not data[..., 0].any()


def test_a_scaled_nifti_is_counted_at_the_size_it_is_read_at(tmp_path, monkeypatch):
    """A slope or intercept (CT's -1024) makes nibabel read int16 voxels as float64: four
    times the bytes the header's type gives, which the allowance must count."""
    from napari_active_sam.core.data import image as image_module

    path = tmp_path / "ct.nii"
    image = nibabel.Nifti1Image(np.zeros((64, 64, 100), np.int16), np.eye(4))
    image.header.set_slope_inter(1, -1024)
    nibabel.save(image, path)
    monkeypatch.setattr(image_module, "MAX_IMAGE_BYTES", 1_000_000)  # 0.8 MB as int16
    with pytest.raises(ImageError, match="would take 3,276,800 bytes"):
        read_image(path)


def test_a_png_of_grey_and_alpha_is_grey_and_an_animated_one_a_stack(tmp_path):
    import imageio.v3 as iio

    grey = np.random.default_rng(2).integers(0, 255, (16, 12, 2)).astype(np.uint8)
    iio.imwrite(tmp_path / "alpha.png", grey)
    image = read_image(tmp_path / "alpha.png")
    assert not image.rgb and image.scale == (1.0, 1.0)
    np.testing.assert_array_equal(image.data, grey[..., 0])
    frames = np.random.default_rng(3).integers(0, 255, (3, 16, 12)).astype(np.uint8)
    iio.imwrite(tmp_path / "frames.png", frames, extension=".png")
    image = read_image(tmp_path / "frames.png")
    assert image.data.shape == (3, 16, 12) and image.scale == (1.0, 1.0, 1.0)


def test_export_refuses_nifti_labels_placed_elsewhere_in_space(tmp_path, capsys):
    from napari_active_sam.cli.main import main

    image, labels = tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((6, 5, 2), np.int16), np.eye(4)), image)
    objects = np.zeros((6, 5, 2), np.int16)
    objects[1, 1, 1] = 1
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # the same grid mirrored in x
    nibabel.save(nibabel.Nifti1Image(objects, flipped), labels)
    command = ["export", "--image", str(image), "--labels", str(labels), "--format", "nifti"]
    assert main([*command, "--out", str(tmp_path / "out.nii.gz")]) == 2
    assert "places its voxels elsewhere in space" in capsys.readouterr().err
    assert not (tmp_path / "out.nii.gz").exists()
    nibabel.save(nibabel.Nifti1Image(objects, np.eye(4)), labels)
    assert main([*command, "--out", str(tmp_path / "out.nii.gz")]) == 0
    assert f"1 object written to {tmp_path / 'out.nii.gz'}" in capsys.readouterr().err
