"""DICOM series: which files make one volume, in which order, at which spacing.

Headers are read first (no pixel data), so a folder is sorted out before any image is
decoded and only the slices of the chosen volume are. A volume is one orientation and one
image size of one series; its slices are ordered along the slice normal by
ImagePositionPatient, or by InstanceNumber where positions are missing (said in a warning).
What the reader cannot order for certain, it refuses with a message that says why.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError
from .image import COMPRESSED_RATIO, ImageData, check_claimed_size, checked_spacing

EVEN = 0.1
"""Relative difference between slice gaps (and against SpacingBetweenSlices) tolerated."""
SAME_PLACE_MM = 1e-3
"""Slices closer than this along the normal are at the same position."""


@dataclass(frozen=True)
class _Slice:
    """What the reader uses of one DICOM image file's header, read and checked up front (a
    value that cannot be converted makes the file damaged there, not halfway through)."""

    path: Path
    series: str
    description: str
    modality: str
    sop: str
    orientation: tuple[float, ...] | None
    position: np.ndarray | None
    instance: int | None
    size: tuple[int, int]
    frames: int
    samples: int
    bits: int
    compressed: bool
    pixel_spacing: tuple[float, ...] | None
    spacing_between: float | None
    thickness: float | None
    slope: float | None
    intercept: float | None

    @property
    def placed(self) -> bool:
        """Whether the slice has a usable position and orientation (finite, and two
        orientation vectors that span a plane)."""
        if self.position is None or self.orientation is None:
            return False
        orientation = np.array(self.orientation)
        normal = np.cross(orientation[:3], orientation[3:])
        return bool(np.all(np.isfinite(self.position)) and np.all(np.isfinite(orientation))
                    and np.linalg.norm(normal) > 0.5)  # fmt: skip

    @property
    def stack(self) -> tuple:
        """What slices of one volume share: orientation (to 1e-3) and image size."""
        rounded = None if self.orientation is None else tuple(np.round(self.orientation, 3))
        return rounded, self.size


def read_series(folder: Path, chosen: Path | None = None) -> ImageData:
    """The volume of a DICOM folder: the series of ``chosen`` or else the largest one.

    Parameters
    ----------
    folder : Path
        A folder of DICOM files; other files in it are passed over.
    chosen : Path, optional
        A file of the series to read.

    Returns
    -------
    ImageData
        ``(z, y, x)`` in Hounsfield or stored units (``(y, x)`` for a single image), scale
        ``(slice spacing, row spacing, column spacing)``.

    Raises
    ------
    ImageError
        If the folder holds no DICOM image, ``chosen`` is none or is damaged, or the slices
        cannot be put in a certain order (no positions and no distinct instance numbers,
        different images at one position, multi-frame files mixed with slices), or a slice's
        pixel data is damaged.
    """
    slices, damaged = _headers(sorted(p for p in folder.iterdir() if p.is_file()))
    if chosen is not None and not any(s.path == chosen for s in slices):
        why = "is damaged" if chosen in damaged else "is not a DICOM image"
        raise ImageError(f"{chosen.name} {why}: choose another DICOM file or the folder.")
    names = ", ".join(p.name for p in damaged[:5]) + (", …" if len(damaged) > 5 else "")
    if not slices:
        found = f" (only damaged DICOM files: {names})" if damaged else ""
        raise ImageError(f"{folder} contains no readable DICOM image{found}: choose a DICOM "
                         "series folder.")  # fmt: skip
    if damaged:
        warnings.warn(f"{folder}: {len(damaged)} damaged DICOM file(s) left out ({names}).",
                      UserWarning, stacklevel=3)  # fmt: skip
    volume, others = _choose(folder, slices, chosen)
    ordered, spacing = _order(folder, volume)
    data, rgb = _pixels(ordered)
    first = ordered[0]
    stated = first.pixel_spacing
    if stated is None:
        rows = columns = 1.0
    else:
        rows, columns = checked_spacing(first.path, stated, "PixelSpacing")
    scale = (rows, columns) if data.ndim - rgb == 2 else (spacing, rows, columns)
    spatial = data.shape[: data.ndim - rgb]
    placed = _affine(ordered, rows, columns, spacing) if len(spatial) == 3 else None
    return ImageData(
        data=data,
        scale=scale,
        rgb=rgb,
        spacing_known=stated is not None and (rows, columns) == stated,
        metadata={
            "series_uid": first.series,
            "series_description": first.description,
            "other_series": others,
            "modality": first.modality,
            "files": [str(s.path) for s in ordered],  # the slices' files, in volume order
            "shape": spatial,
            # where the voxels lie in the patient (NIfTI's RAS), for labels saved as NIfTI
            **({"affine": placed, "axes_order": (2, 1, 0)} if placed is not None else {}),
        },
    )


def _affine(ordered: list[_Slice], rows: float, columns: float,
            spacing: float) -> np.ndarray | None:  # fmt: skip
    """The NIfTI (RAS) affine of a volume of single-frame slices in volume order, from
    their orientation and positions, with voxel axes (column, row, slice); None where a
    slice states neither."""
    if any(s.frames != 1 or s.orientation is None or s.position is None for s in ordered):
        return None
    across, down = np.array(ordered[0].orientation[:3]), np.array(ordered[0].orientation[3:])
    if len(ordered) > 1:
        step = (ordered[-1].position - ordered[0].position) / (len(ordered) - 1)
    else:
        step = np.cross(across, down) * spacing
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = across * columns, down * rows, step
    lps[:3, 3] = ordered[0].position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's LPS to NIfTI's RAS


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a file with the DICOM marker ("DICM" after a 128-byte preamble)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_mapped(path: Path, **options):
    """``pydicom.dcmread`` through a memory map of the file.

    Reading a plain file asks the system for as many bytes as an element's length claims, at
    once; a damaged length can claim gigabytes. A memory map hands back at most what the file
    holds, so no read allocates more than the file's size.
    """
    import mmap

    import pydicom

    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise pydicom.errors.InvalidDicomError(f"{path.name} is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return pydicom.dcmread(mapped, **options)


def _headers(files: list[Path]) -> tuple[list[_Slice], list[Path]]:
    """The image headers among ``files``, and the files marked DICOM that cannot be read."""
    import pydicom

    slices, damaged = [], []
    for file in files:
        try:
            header = read_mapped(file, stop_before_pixels=True, defer_size="64 KB")
            if "Rows" not in header or "Columns" not in header:
                continue  # a DICOMDIR, a report, a presentation state: no image
            if header.get("Modality") == "SEG":
                continue  # a segmentation of a series, read with its series (dicom_seg)
            slices.append(_slice(file, header))
        except pydicom.errors.InvalidDicomError:
            continue  # not a DICOM file (a README, a thumbnail)
        except Exception:  # pydicom and the checks below raise many kinds for a bad header
            damaged.append(file)
    return slices, damaged


def _slice(file: Path, header) -> _Slice:
    """The fields the reader uses, converted now (raises on a value that cannot be)."""
    import pydicom

    def number(keyword: str) -> float | None:
        value = header.get(keyword)
        return None if value in (None, "") else float(value)

    orientation = _values(header, "ImageOrientationPatient", 6)
    position = _values(header, "ImagePositionPatient", 3)
    instance = header.get("InstanceNumber")
    frames = int(header.get("NumberOfFrames", 1) or 1)
    size = (int(header.Rows), int(header.Columns))
    if min(size) <= 0 or frames <= 0:
        raise ValueError("no pixels")
    syntax = header.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian)
    return _Slice(
        path=file,
        series=str(header.get("SeriesInstanceUID", "unknown")),
        description=str(header.get("SeriesDescription", "")).strip(),
        modality=str(header.get("Modality", "")),
        sop=str(header.get("SOPInstanceUID", "")),
        orientation=None if orientation is None else tuple(orientation),
        position=None if position is None else np.array(position),
        instance=None if instance in (None, "") else int(instance),
        size=size,
        frames=frames,
        samples=int(header.get("SamplesPerPixel", 1) or 1),
        bits=int(header.get("BitsAllocated", 16) or 16),
        compressed=pydicom.uid.UID(syntax).is_compressed,  # ValueError: not a syntax
        pixel_spacing=_pixel_spacing(header),
        spacing_between=number("SpacingBetweenSlices"),
        thickness=number("SliceThickness"),
        slope=number("RescaleSlope"),
        intercept=number("RescaleIntercept"),
    )


def _values(header, keyword: str, count: int) -> list[float] | None:
    """The ``count`` numbers of ``keyword`` (None if the header has none); a header that
    gives another number of them is damaged (raises ValueError)."""
    value = header.get(keyword)
    if value in (None, ""):
        return None
    many = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    numbers = [float(v) for v in (value if many else [value])]
    if len(numbers) != count:
        raise ValueError(f"{keyword} has {len(numbers)} values, not {count}")
    return numbers


def _pixel_spacing(header) -> tuple[float, ...] | None:
    """The (row, column) pixel size in mm a header states: its PixelSpacing, or an enhanced
    multi-frame file's, which it keeps in its shared functional groups; None if neither."""
    stated = header
    if header.get("PixelSpacing") in (None, ""):
        try:
            stated = header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        except (AttributeError, IndexError, KeyError, TypeError):
            return None
    spacing = _values(stated, "PixelSpacing", 2)
    return None if spacing is None else tuple(spacing)


def _choose(folder: Path, slices: list[_Slice], chosen: Path | None):
    """The slices of one volume (the chosen file's or the largest), warning of the rest."""
    by_volume: dict[tuple, list[_Slice]] = {}
    for s in slices:
        by_volume.setdefault((s.series, s.stack), []).append(s)
    if chosen is not None:
        key = next((s.series, s.stack) for s in slices if s.path == chosen)
    else:
        key = max(by_volume, key=lambda k: len(by_volume[k]))
    volume = by_volume[key]
    series = Counter(s.series for s in slices)
    others = {uid: n for uid, n in series.items() if uid != key[0]}
    if others and chosen is None:
        described = {s.series: s.description for s in slices}

        def name(uid: str) -> str:
            text = f'"{described[uid]}"' if described[uid] else f"series {uid}"
            return f"{text} ({series[uid]} slices)"

        warnings.warn(
            f"{folder} holds {len(series)} DICOM series; reading the largest, {name(key[0])}, "
            f"and leaving {', '.join(name(uid) for uid in others)}. Open a file of another "
            "series to read that one.",
            UserWarning,
            stacklevel=4,
        )
    left = series[key[0]] - len(volume)
    if left and chosen is None:  # a file the user chose reads its own stack, as asked
        warnings.warn(
            f"{folder}: {left} image(s) of this series have another orientation or size (a "
            f"localiser, a reformat) and are left out; reading {len(volume)} of "
            f"{volume[0].size[0]} × {volume[0].size[1]}. Open one of them to read those.",
            UserWarning,
            stacklevel=4,
        )
    return volume, others


def _order(folder: Path, volume: list[_Slice]) -> tuple[list[_Slice], float]:
    """The slices in order along the normal, and the spacing between them."""
    if any(s.frames > 1 for s in volume):
        if len(volume) > 1:
            raise ImageError(f"{folder}: multi-frame files mixed with other images of the "
                             "same series; open the multi-frame file itself.")  # fmt: skip
        return volume, _stated_spacing(volume[0], folder, "a multi-frame image")
    if len(volume) == 1:
        return volume, _stated_spacing(volume[0], folder, None)
    if all(s.placed for s in volume):
        orientation = np.array(volume[0].orientation)
        normal = np.cross(orientation[:3], orientation[3:])
        depth = np.array([s.position @ normal for s in volume])
        order = np.argsort(depth, kind="stable")
        volume, depth = _unique([volume[i] for i in order], depth[order], folder)
        if len(volume) == 1:
            return volume, _stated_spacing(volume[0], folder, None)
        return volume, _spacing_from_positions(folder, volume, np.diff(depth))
    numbers = [s.instance for s in volume]
    if None in numbers or len(set(numbers)) < len(numbers):
        raise ImageError(
            f"{folder}: the slices have no usable ImagePositionPatient and "
            "ImageOrientationPatient and no distinct InstanceNumber, so their order is "
            "unknown; export the series again with positions."
        )
    volume = sorted(volume, key=lambda s: s.instance)
    spacing = _stated_spacing(volume[0], folder, "no ImagePositionPatient")
    warnings.warn(
        f"{folder}: the slices have no usable ImagePositionPatient; ordered by InstanceNumber, "
        f"{spacing:g} mm apart as the header states. Check the anatomy before measuring.",
        UserWarning,
        stacklevel=4,
    )
    return volume, spacing


def _unique(volume: list[_Slice], depth: np.ndarray, folder: Path):
    """Drop copies of one image (same SOPInstanceUID); refuse different images at one place."""
    keep = [0]
    for i in range(1, len(volume)):
        if depth[i] - depth[keep[-1]] > SAME_PLACE_MM:
            keep.append(i)
            continue
        a, b = volume[keep[-1]], volume[i]
        if a.sop != b.sop:
            raise ImageError(
                f"{folder}: {a.path.name} and {b.path.name} are different images at the same "
                f"position ({depth[i]:.3f} mm along the normal): the series holds several "
                "acquisitions (time points, echoes); put each in a folder of its own."
            )
    if len(keep) < len(volume):
        warnings.warn(
            f"{folder}: {len(volume) - len(keep)} file(s) are copies of another slice (same "
            "SOPInstanceUID) and are read once.",
            UserWarning,
            stacklevel=5,
        )
    return [volume[i] for i in keep], depth[keep]


def _spacing_from_positions(folder: Path, volume: list[_Slice], gaps: np.ndarray) -> float:
    """The median gap between slices, with a warning where gaps are uneven or disagree with
    the SpacingBetweenSlices the header states."""
    spacing = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - spacing)))
    if abs(gaps[worst] - spacing) > EVEN * spacing:
        warnings.warn(
            f"{folder}: slices are unevenly spaced ({gaps[worst]:.3g} mm between "
            f"{volume[worst].path.name} and {volume[worst + 1].path.name}, {spacing:.3g} mm "
            "elsewhere): a slice may be missing; the volume is shown at "
            f"{spacing:.3g} mm per slice.",
            UserWarning,
            stacklevel=5,
        )
    stated = volume[0].spacing_between
    if stated is not None and abs(stated - spacing) > EVEN * spacing:
        warnings.warn(
            f"{folder}: SpacingBetweenSlices says {float(stated):g} mm but the positions are "
            f"{spacing:.3g} mm apart; the positions are used.",
            UserWarning,
            stacklevel=5,
        )
    return spacing


def _stated_spacing(first: _Slice, folder: Path, why: str | None) -> float:
    """The slice spacing a header states (SpacingBetweenSlices, else SliceThickness)."""
    for keyword, value in (("SpacingBetweenSlices", first.spacing_between),
                           ("SliceThickness", first.thickness)):  # fmt: skip
        if value is not None:
            return checked_spacing(first.path, (value,), keyword)[0]
    if why is not None:
        warnings.warn(
            f"{folder}: {why} and no SpacingBetweenSlices or SliceThickness; 1 mm per slice "
            "is assumed.",
            UserWarning,
            stacklevel=5,
        )
    return 1.0


def _pixels(volume: list[_Slice]) -> tuple[np.ndarray, bool]:
    """The slices' pixels, rescaled to Hounsfield (or stored) units, as one array."""
    first = volume[0]
    samples = first.samples
    shape = (len(volume) * first.frames, *first.size) + ((samples,) if samples > 1 else ())
    check_claimed_size(first.path, shape, 4)
    planes = [_decoded(s) for s in volume]
    data = np.concatenate(planes) if first.frames > 1 else np.stack(planes)
    rgb = planes[0].ndim > (3 if first.frames > 1 else 2)  # samples, or a palette's colour
    if data.shape[0] == 1:
        data = data[0]
    if not rgb and np.all(data == np.round(data)) and data.min() >= -32768 and data.max() < 32768:
        data = data.astype(np.int16)
    return data, rgb


def _decoded(s: _Slice) -> np.ndarray:
    """One file's pixels as float32 (uint8 for colour), rescaled by slope and intercept.

    MONOCHROME1 (a radiograph's white for low values) is turned round within its stored
    range, so that it shows as the scanner's viewer shows it; PALETTE COLOR goes through
    its palette to RGB."""

    check_claimed_size(s.path, (s.frames, *s.size, s.samples), max(s.bits, 1) / 8,
                       stored=s.path.stat().st_size,
                       ratio=COMPRESSED_RATIO if s.compressed else 1)  # fmt: skip
    try:
        ds = read_mapped(s.path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom's decoders raise many kinds for damaged pixel data
        raise ImageError(f"{s.path.name}: its pixel data cannot be decoded ({exc}); the file "
                         "is damaged or uses an unsupported transfer syntax.") from exc  # fmt: skip
    expected = ((s.frames,) if s.frames > 1 else ()) + s.size
    if pixels.shape[: len(expected)] != expected:
        raise ImageError(f"{s.path.name}: its pixels have shape {pixels.shape}, not the "
                         f"{expected} its header gives; the file is damaged.")  # fmt: skip
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    stored_bits = int(ds.get("BitsStored", s.bits) or s.bits)
    if photometric == "PALETTE COLOR" and pixels.ndim == len(expected):
        from pydicom.pixels import apply_color_lut

        try:
            pixels = apply_color_lut(pixels, ds)
        except Exception as exc:  # a palette missing or of another size than it says
            raise ImageError(f"{s.path.name}: its colour palette cannot be applied ({exc}); "
                             "the file is damaged.") from exc  # fmt: skip
        stored_bits = 8 * pixels.dtype.itemsize
    if pixels.ndim > len(expected):  # colour: no rescaling, brought to 8 bits
        if pixels.dtype == np.uint8:
            return pixels
        top = 2**stored_bits - 1
        return np.clip(np.round(pixels * (255 / top)), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":  # white is low: turned round within the stored range
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        low, high = (-(2 ** (stored_bits - 1)), 2 ** (stored_bits - 1) - 1) if signed else (
            0, 2**stored_bits - 1)  # fmt: skip
        pixels = (low + high) - pixels.astype(np.int64)
    slope = 1.0 if s.slope is None else s.slope
    intercept = 0.0 if s.intercept is None else s.intercept
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise ImageError(f"{s.path.name}: RescaleSlope {slope} / RescaleIntercept {intercept} "
                         "cannot map stored values to units; the header is damaged.")  # fmt: skip
    return pixels.astype(np.float32) * slope + intercept
