"""Slice selection and intensity windows: any image or volume to SAM's uint8 RGB input.

Every dtype is handled explicitly: booleans map to 0/255, integers and floats go through an
intensity window, complex data is refused. NaN counts as the window's low end, +inf as its
high end, -inf as its low end; a slice with no finite value is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..enums import WindowKind
from ..errors import ImageError

MIN_SIDE = 2
"""Smallest image side (pixels) accepted; SAM cannot place a prompt in less."""

_PERCENTILE_SAMPLE = 4_000_000
"""Values sampled (evenly strided) to estimate percentiles of a large volume."""


CT_PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}
"""CT display presets as (width, level) in Hounsfield units."""


@dataclass(frozen=True)
class IntensityWindow:
    """An intensity window.

    Attributes
    ----------
    kind : WindowKind
        Percentile or fixed.
    low, high : float
        Percentiles in [0, 100] for ``PERCENTILE``; data values for ``FIXED``.
    name : str
        Preset name, for display ("" when custom).
    """

    kind: WindowKind = WindowKind.PERCENTILE
    low: float = 0.5
    high: float = 99.5
    name: str = ""

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high <= self.low:
            raise ImageError(
                f"Intensity window needs finite low < high, got low={self.low}, high={self.high}."
            )
        if self.kind is WindowKind.PERCENTILE and not (self.low >= 0 and self.high <= 100):
            raise ImageError("Percentile windows take percentiles between 0 and 100.")

    @classmethod
    def percentile(cls, low: float = 0.5, high: float = 99.5) -> IntensityWindow:
        return cls(WindowKind.PERCENTILE, float(low), float(high))

    @classmethod
    def fixed(cls, low: float, high: float, name: str = "") -> IntensityWindow:
        return cls(WindowKind.FIXED, float(low), float(high), name)

    @classmethod
    def ct(cls, preset: str) -> IntensityWindow:
        """A CT window preset: soft_tissue, lung, bone or brain."""
        try:
            width, level = CT_PRESETS[preset]
        except KeyError:
            raise ImageError(
                f"Unknown CT preset {preset!r}: use one of {', '.join(CT_PRESETS)}."
            ) from None
        return cls.fixed(level - width / 2, level + width / 2, name=preset)

    @classmethod
    def from_name(cls, name: str) -> IntensityWindow:
        """``"percentile"`` or a CT preset name (what the GUI and CLI offer)."""
        return cls.percentile() if name == WindowKind.PERCENTILE.value else cls.ct(name)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "low": self.low, "high": self.high, "name": self.name}

    def limits(self, data: np.ndarray) -> tuple[float, float]:
        """Resolve the window to data values ``(lo, hi)`` for ``data`` (a slice or volume).

        Percentiles ignore NaN and inf. For a constant image ``lo == hi``.
        """
        if self.kind is WindowKind.FIXED:
            return self.low, self.high
        values = _real_values(data)
        values = np.ravel(values) if isinstance(values, np.ndarray) else _sampled(values)
        if values.size > _PERCENTILE_SAMPLE:
            # Evenly spread indices, not a fixed stride: a stride that is a multiple of the
            # channel count would sample one colour channel only.
            values = values[np.linspace(0, values.size - 1, _PERCENTILE_SAMPLE).astype(np.int64)]
        if values.dtype.kind == "f":  # integers and booleans are finite already
            values = values[np.isfinite(values)]
        if values.size == 0:
            raise ImageError("The image has no finite value (all NaN or inf): nothing to show.")
        lo, hi = np.percentile(values, [self.low, self.high])
        return float(lo), float(hi)


def _sampled(data) -> np.ndarray:
    """Values of a lazy (dask or zarr) array without reading it whole: evenly spaced
    slices along its first axis, about :data:`_PERCENTILE_SAMPLE` values in all."""
    per_slice = max(1, int(np.prod(data.shape[1:])))
    count = min(data.shape[0], max(1, _PERCENTILE_SAMPLE // per_slice))
    chosen = np.unique(np.linspace(0, data.shape[0] - 1, count).round().astype(int))
    return np.concatenate([np.ravel(np.asarray(data[int(i)])) for i in chosen])


def _real_values(data):
    """``data`` checked to hold real numbers (booleans as 0.0/1.0); a lazy array (dask,
    zarr) is checked by its dtype and stays unread."""
    if not (hasattr(data, "dtype") and hasattr(data, "shape")):
        data = np.asarray(data)
    if int(np.prod(data.shape)) == 0:
        raise ImageError(f"The image is empty (shape {data.shape}): load an image with pixels.")
    if np.iscomplexobj(data):
        raise ImageError(
            "Complex-valued images are not supported: take the magnitude (np.abs) or the "
            "real part first."
        )
    if data.dtype == bool:
        return data.astype(np.float32)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise ImageError(f"Images of dtype {data.dtype} are not supported: use numbers.")
    return data


def select_slice(
    data: np.ndarray,
    index: tuple[int, ...] = (),
    rgb: bool = False,
    channel: int | None = None,
) -> np.ndarray:
    """Take one 2D image from an nD array.

    Parameters
    ----------
    data : np.ndarray
        ``(..., H, W)`` grayscale, or ``(..., H, W, C)`` when ``rgb`` is True.
    index : tuple of int
        One index per leading axis (e.g. ``(z,)`` for a volume, ``(t, z)`` for 4D). Leading
        axes of length 1 may be left out.
    rgb : bool
        Whether the last axis holds colour channels (3 or 4).
    channel : int, optional
        With ``rgb``, keep only this channel (as grayscale).

    Returns
    -------
    np.ndarray
        ``(H, W)`` or ``(H, W, 3)`` view or copy of the slice.
    """
    if not (hasattr(data, "shape") and hasattr(data, "__getitem__")):
        data = np.asarray(data)
    spatial = 3 if rgb else 2
    if data.ndim < spatial:
        raise ImageError(
            f"Expected at least {spatial} dimensions ({'H, W, C' if rgb else 'H, W'}), got "
            f"shape {data.shape}."
        )
    leading = data.shape[: data.ndim - spatial]
    index = tuple(int(i) for i in index)
    if not index and all(n == 1 for n in leading):
        index = (0,) * len(leading)
    if len(index) != len(leading):
        raise ImageError(
            f"Image of shape {data.shape} has {len(leading)} leading axes {leading}; give one "
            f"index for each (got {index}). For a {data.ndim}D stack choose the time point, "
            "channel or slice first."
        )
    for i, n in zip(index, leading, strict=True):
        if not 0 <= i < n:
            raise ImageError(f"Slice index {index} is outside the image's leading axes {leading}.")
    image = np.asarray(data[index])  # a lazy volume reads this slice only
    if rgb:
        if image.shape[-1] not in (3, 4):
            raise ImageError(f"RGB images need 3 or 4 channels, got {image.shape[-1]}.")
        image = image[..., :3]
        if channel is not None:
            if not 0 <= channel < 3:
                raise ImageError(f"Channel {channel} does not exist: use 0, 1 or 2.")
            image = image[..., channel]
    elif channel is not None:
        raise ImageError("A channel can only be chosen from an RGB image.")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ImageError(
            f"The image is {image.shape[0]}×{image.shape[1]} pixels; SAM needs at least "
            f"{MIN_SIDE} pixels on each side."
        )
    return image


def to_sam_rgb(image: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """Map a 2D slice to SAM's input: uint8 ``(H, W, 3)``.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, 3)`` of any real dtype.
    limits : tuple of float
        ``(lo, hi)`` data values mapped to 0 and 255 (from :meth:`IntensityWindow.limits`).
        ``lo == hi`` (a constant image) gives an all-zero image.
    """
    values = _real_values(image)
    if values.ndim not in (2, 3):
        raise ImageError(f"Expected a 2D slice, got shape {values.shape}.")
    if min(values.shape[:2]) < MIN_SIDE:
        raise ImageError(
            f"The image is {values.shape[0]}×{values.shape[1]} pixels; SAM needs at least "
            f"{MIN_SIDE} pixels on each side."
        )
    lo, hi = limits
    if image.dtype == bool:
        scaled = values * 255.0
    elif hi <= lo:
        scaled = np.zeros(values.shape, np.float32)
    else:  # in float32 unless its range would turn the window's ends or span to 0 or inf
        span = float(hi) - float(lo)
        wide = max(abs(float(lo)), abs(float(hi))) > 1e37 or span < 1e-30
        work = np.float64 if wide else np.float32
        scaled = (values.astype(work) - work(lo)) * work(255.0 / span)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    out = np.clip(scaled, 0, 255).round().astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class SliceSource:
    """How SAM input is made from one image layer: the array and its window.

    Attributes
    ----------
    data : np.ndarray
        The whole image: ``(..., H, W)`` or ``(..., H, W, C)`` when ``rgb``.
    window : IntensityWindow
        The intensity window; percentiles are resolved once over the whole array so every
        slice of a volume is shown alike.
    rgb : bool
        Whether the last axis holds colour channels.
    channel : int, optional
        Channel of an RGB image to use alone.
    """

    data: np.ndarray
    window: IntensityWindow = IntensityWindow()
    rgb: bool = False
    channel: int | None = None

    def __post_init__(self):
        _real_values(self.data)  # refuse empty, complex and non-numeric data up front

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the data without a colour axis: what a mask of it must have."""
        shape = np.shape(self.data)
        return shape[:-1] if self.rgb else shape

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """Shape of the axes before the image plane (``(Z,)`` for a volume)."""
        return np.shape(self.data)[: np.ndim(self.data) - (3 if self.rgb else 2)]

    def slice_indices(self) -> list[tuple[int, ...]]:
        """Every leading index, in C order."""
        return [tuple(int(i) for i in idx) for idx in np.ndindex(*self.leading_shape)]

    def limits(self) -> tuple[float, float]:
        return self.window.limits(self.data)

    def raw_slice(self, index: tuple[int, ...] = ()) -> np.ndarray:
        return select_slice(self.data, index, self.rgb, self.channel)

    def sam_slice(
        self, index: tuple[int, ...] = (), limits: tuple[float, float] | None = None
    ) -> np.ndarray:
        """uint8 ``(H, W, 3)`` SAM input for the slice at ``index``."""
        return to_sam_rgb(self.raw_slice(index), limits or self.limits())

    def parameters(self, limits: tuple[float, float]) -> dict[str, Any]:
        """Everything about preprocessing that changes SAM's input (for signatures)."""
        return {
            "window": self.window.to_dict(),
            "limits": [float(limits[0]), float(limits[1])],
            "rgb": self.rgb,
            "channel": self.channel,
        }
