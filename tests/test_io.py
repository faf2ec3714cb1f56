"""Readers on real files written by nibabel, tifffile and imageio."""

from __future__ import annotations

import imageio.v3 as iio
import nibabel
import numpy as np
import pytest
import tifffile

from napari_active_sam.core.errors import ImageError
from napari_active_sam.core.files import read_image, stem
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


def test_tiff_stack_png_and_npy(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (5, 16, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    image = read_image(tmp_path / "stack.tif")
    assert np.array_equal(image.data, stack) and not image.rgb and image.scale == (1.0,) * 3
    rgb = np.zeros((8, 9, 3), np.uint8)
    iio.imwrite(tmp_path / "photo.png", rgb)
    assert read_image(tmp_path / "photo.png").rgb
    np.save(tmp_path / "arr.npy", stack[0])
    assert read_image(tmp_path / "arr.npy").data.shape == (16, 12)


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
