"""DICOM SEG: committed objects as a segmentation a PACS and other viewers can show.

Written and read with highdicom. A SEG refers to the series it was drawn on (its frame of
reference and each source slice): one segment per object, labelled ``object N`` (N the
object's label), its description free for what was measured. Read back next to its series,
it gives labels on the series' own grid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ... import __version__
from ..errors import ImageError
from ..keeping import written_whole
from .datasets import check_labels
from .dicom import read_mapped, read_series
from .image import ImageData

MAX_SEGMENTS = 65535
"""DICOM numbers segments with 16 bits."""

_LABEL = re.compile(r"object (\d+)$")


def _series_files(folder: Path, series_uid: str | None = None) -> tuple[list[Path], ImageData]:
    """The files of ``folder``'s series (the one with ``series_uid``, or the volume the
    reader chooses) in volume order, and the series read."""
    chosen = None
    if series_uid is not None:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            try:
                header = read_mapped(path, stop_before_pixels=True, defer_size="64 KB")
            except Exception:  # not DICOM, or damaged: read_series names the damaged ones
                continue
            if header.get("Modality") != "SEG" and header.get("SeriesInstanceUID") == series_uid:
                chosen = path
                break
        if chosen is None:
            raise ImageError(
                f"This segmentation belongs to series {series_uid}, which is not in {folder}: "
                "open it from the folder of the series it was made on."
            )
    image = read_series(folder, chosen)
    return [Path(f) for f in image.metadata["files"]], image


def write_seg(
    series: Path,
    labels: np.ndarray,
    out: Path,
    descriptions: Mapping[int, str] | None = None,
    series_uid: str | None = None,
) -> Path:
    """Write the objects of ``labels`` (on the grid of the DICOM series in folder
    ``series``) as a DICOM SEG at ``out``.

    Parameters
    ----------
    series : Path
        The folder of the series the labels were drawn on.
    labels : np.ndarray
        Integer ``(Z, H, W)`` (or ``(H, W)`` for a one-image series), 0 = background.
    out : Path
        The SEG file to write.
    descriptions : mapping of int to str, optional
        Per object label, the segment's description (what was measured).
    series_uid : str, optional
        The SeriesInstanceUID of the series the labels were drawn on, where the folder
        holds more than one (default: the volume the reader chooses there).

    Raises
    ------
    ImageError
        Labels that do not fit the series, no object, more objects than DICOM can number,
        or a folder without a readable series.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    if not Path(series).is_dir():
        raise ImageError(f"The series the labels were drawn on is no longer in {series}: put "
                         "it back there, or save the labels as NIfTI or TIFF.")  # fmt: skip
    files, image = _series_files(Path(series), series_uid)
    labels = check_labels(labels, image.spatial_shape, "The labels", "the series")
    objects = [int(v) for v in np.unique(labels) if v > 0]
    if not objects:
        raise ImageError("The labels hold no object: nothing to export.")
    if len(objects) > MAX_SEGMENTS:
        raise ImageError(
            f"{len(objects)} objects, but a DICOM SEG numbers at most {MAX_SEGMENTS} segments: "
            "export them in parts."
        )
    numbered = np.zeros(labels.shape, np.uint16)  # object labels may exceed 16 bits
    for number, label in enumerate(objects, start=1):
        numbered[labels == label] = number
    sources = [pydicom.dcmread(path) for path in files]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="napari-active-sam", version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
    )  # fmt: skip
    segments = []
    for number, label in enumerate(objects, start=1):
        segment = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"object {label}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
        )
        if descriptions and label in descriptions:
            segment.SegmentDescription = str(descriptions[label])[:64]  # an LO value
        segments.append(segment)
    try:
        seg = _segmentation(sources, numbered, segments)
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # from highdicom
        raise ImageError(
            f"The series in {series} lacks what a DICOM SEG copies from it ({error}): save the "
            "labels as NIfTI or TIFF instead."
        ) from error
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return written_whole(seg.save_as, out)


def _segmentation(sources: list, numbered: np.ndarray, segments: list):
    """highdicom's SEG of ``numbered`` (segment numbers, 0 = none) on ``sources``."""
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=numbered if numbered.ndim == 3 else numbered[None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=max(int(sources[0].get("SeriesNumber", 0) or 0), 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-active-sam",
        manufacturer_model_name="napari-active-sam",
        software_versions=__version__,
        device_serial_number="none",
        series_description="napari-active-sam objects",
    )


def is_seg(path: Path) -> bool:
    """Whether ``path`` is a DICOM segmentation (Modality SEG); a file that cannot be read
    is not (the series reader then says why)."""
    try:
        header = read_mapped(path, stop_before_pixels=True, defer_size="64 KB")
    except Exception:  # pydicom raises many kinds for a damaged header
        return False
    return header.get("Modality") == "SEG"


def read_seg(
    path: Path, series: Path | None = None
) -> tuple[np.ndarray, dict[int, str], tuple[float, ...]]:
    """The labels of a DICOM SEG on the grid of its series (in ``series``, or the SEG's own
    folder), each object's segment description, and the series' voxel size.

    Returns
    -------
    labels : np.ndarray
        int32 ``(Z, H, W)`` (``(H, W)`` for a one-image series): each segment's pixels set
        to its object's label (``object N``), or to its segment number.
    descriptions : dict of int to str
    scale : tuple of float
        The series' voxel size (mm), for a layer on the same grid.

    Raises
    ------
    ImageError
        Not a SEG, a SEG of another series than the one there, or a SEG that cannot be read.
    """
    import highdicom as hd

    path = Path(path)
    if not is_seg(path):
        raise ImageError(f"{path.name} is not a DICOM segmentation (Modality SEG).")
    try:
        seg = hd.seg.segread(path)
        series_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except (AttributeError, IndexError, KeyError, ValueError) as error:
        raise ImageError(f"{path.name} cannot be read as a segmentation ({error}).") from error
    folder = Path(series) if series else path.parent
    files, image = _series_files(folder, series_uid)
    uids = [str(read_mapped(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    drawn = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    missing = drawn - set(uids)
    if missing:
        raise ImageError(
            f"{len(missing)} of the {len(drawn)} images {path.name} was drawn on are not in "
            f"{folder}, so their objects would be lost: open it next to its whole series."
        )
    on = [i for i, uid in enumerate(uids) if uid in drawn]  # images it was drawn on
    numbers = np.zeros((len(uids), *image.spatial_shape[-2:]), np.int64)
    if on:
        try:
            numbers[on] = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[uids[i] for i in on], combine_segments=True,
                relabel=False, ignore_spatial_locations=True,
            )  # fmt: skip
        except (KeyError, ValueError) as error:
            raise ImageError(f"{path.name} cannot be read on its series ({error}).") from error
    labels = np.zeros(numbers.shape, np.int32)
    descriptions = {}
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        found = _LABEL.match(str(description.segment_label))
        label = int(found.group(1)) if found else int(number)
        labels[numbers == number] = label
        descriptions[label] = str(getattr(description, "SegmentDescription", ""))
    return labels.reshape(image.spatial_shape), descriptions, tuple(image.scale)
