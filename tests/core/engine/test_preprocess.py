"""Slice selection and intensity windows for every dtype and the awkward images."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.engine.preprocess import (
    CT_PRESETS,
    IntensityWindow,
    SliceSource,
    select_slice,
    to_sam_rgb,
)
from napari_active_sam.core.enums import WindowKind
from napari_active_sam.core.errors import ImageError


@pytest.mark.parametrize(
    ("preset", "low", "high"),
    [("soft_tissue", -160, 240), ("lung", -1350, 150), ("bone", -500, 1300), ("brain", 0, 80)],
)
def test_ct_presets_in_hounsfield_units(preset, low, high):
    window = IntensityWindow.ct(preset)
    assert (window.kind, window.low, window.high, window.name) == (
        WindowKind.FIXED, low, high, preset,
    )  # fmt: skip
    assert set(CT_PRESETS) == {"soft_tissue", "lung", "bone", "brain"}


def test_soft_tissue_window_maps_hounsfield_units_to_uint8():
    hu = np.array([[-1000, -160, 40], [240, 1000, 100]], np.int16)
    rgb = to_sam_rgb(hu, IntensityWindow.ct("soft_tissue").limits(hu))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[..., 0].tolist() == [[0, 0, 128], [255, 255, 166]]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_percentile_window_ignores_outliers():
    data = np.linspace(0, 100, 10_000).reshape(100, 100)
    data[0, 0] = 1e9
    lo, hi = IntensityWindow.percentile(1, 99).limits(data)
    assert 0.9 < lo < 1.1 and 98.5 < hi < 99.5


@pytest.mark.parametrize(
    "dtype",
    ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
     "float16", "float32", "float64"],
)  # fmt: skip
def test_every_real_dtype_gives_a_full_range_ramp(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    top = min(info.max, 10_000) if info else 1.0
    ramp = np.linspace(0, top, 64).astype(dtype).reshape(8, 8)
    rgb = to_sam_rgb(ramp, IntensityWindow.percentile(0, 100).limits(ramp))
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)
    assert rgb.min() == 0 and rgb.max() == 255
    assert (np.diff(rgb[..., 0].ravel().astype(int)) >= 0).all()


def test_boolean_images_map_to_0_and_255():
    mask = np.eye(4, dtype=bool)
    rgb = to_sam_rgb(mask, IntensityWindow.percentile().limits(mask))
    assert set(np.unique(rgb)) == {0, 255} and rgb[0, 0, 0] == 255


def test_nan_and_inf_are_handled_explicitly():
    data = np.array([[np.nan, 0.0, 1.0], [2.0, np.inf, -np.inf]], np.float32)
    limits = IntensityWindow.percentile(0, 100).limits(data)
    assert limits == (0.0, 2.0)
    rgb = to_sam_rgb(data, limits)[..., 0]
    assert rgb.tolist() == [[0, 0, 128], [255, 255, 0]]


@pytest.mark.parametrize("factor", [1e300, 1e-300, 1e-38])
def test_values_beyond_float32_keep_their_picture(factor):
    data = np.random.default_rng(0).random((16, 16))
    expected = to_sam_rgb(data, IntensityWindow.percentile(0, 100).limits(data))
    scaled = data * factor
    got = to_sam_rgb(scaled, IntensityWindow.percentile(0, 100).limits(scaled))
    assert got.any() and np.abs(got.astype(int) - expected).max() <= 1


def test_all_nan_image_is_refused():
    with pytest.raises(ImageError, match="no finite value"):
        IntensityWindow.percentile().limits(np.full((4, 4), np.nan))


def test_constant_image_gives_zeros():
    data = np.full((5, 5), 7, np.uint16)
    limits = IntensityWindow.percentile().limits(data)
    assert limits == (7.0, 7.0)
    assert not to_sam_rgb(data, limits).any()


def test_complex_images_are_refused_with_advice():
    with pytest.raises(ImageError, match="np.abs"):
        SliceSource(np.ones((4, 4), np.complex64))


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (0,)])
def test_empty_images_are_refused(shape):
    with pytest.raises(ImageError, match="empty"):
        SliceSource(np.zeros(shape))


def test_one_pixel_images_are_refused():
    source = SliceSource(np.ones((1, 1)))
    with pytest.raises(ImageError, match="at least 2 pixels"):
        source.sam_slice()


def test_5d_image_needs_an_index_for_each_leading_axis():
    data = np.arange(2 * 3 * 4 * 5 * 6, dtype=np.float32).reshape(2, 3, 4, 5, 6)
    with pytest.raises(ImageError, match="give one index for each"):
        select_slice(data)
    assert np.array_equal(select_slice(data, (1, 2, 3)), data[1, 2, 3])
    with pytest.raises(ImageError, match="outside"):
        select_slice(data, (1, 2, 4))
    source = SliceSource(data)
    assert source.leading_shape == (2, 3, 4) and len(source.slice_indices()) == 24


def test_singleton_leading_axes_need_no_index():
    data = np.ones((1, 1, 6, 7))
    assert select_slice(data).shape == (6, 7)


def test_rgb_and_channel_selection():
    rgba = np.zeros((3, 6, 7, 4), np.uint8)
    rgba[..., 1] = 200
    rgb = select_slice(rgba, (2,), rgb=True)
    assert rgb.shape == (6, 7, 3)
    green = select_slice(rgba, (2,), rgb=True, channel=1)
    assert green.shape == (6, 7) and (green == 200).all()
    with pytest.raises(ImageError, match="3 or 4 channels"):
        select_slice(np.zeros((6, 7, 5)), rgb=True)
    with pytest.raises(ImageError, match="only be chosen from an RGB"):
        select_slice(np.zeros((6, 7)), channel=0)


def test_volume_window_is_resolved_once_for_all_slices(ct_volume):
    source = SliceSource(ct_volume)
    limits = source.limits()
    first, last = source.sam_slice((0,), limits), source.sam_slice((5,), limits)
    # The same tissue value maps to the same grey on every slice.
    assert abs(int(first[0, 0, 0]) - int(last[0, 0, 0])) <= 25
    params = source.parameters(limits)
    assert params["limits"] == list(limits) and params["window"]["kind"] == "percentile"


def test_bad_windows_are_refused():
    with pytest.raises(ImageError):
        IntensityWindow.fixed(10, 5)
    with pytest.raises(ImageError):
        IntensityWindow.percentile(-1, 50)
    with pytest.raises(ImageError, match="soft_tissue"):
        IntensityWindow.ct("liver")
    assert IntensityWindow.from_name("lung") == IntensityWindow.ct("lung")
