"""Attack campaign against napari-active-sam's inputs, summed up as a reliability table.

Damaged and hostile input is fed to the parts that read what users and disks hand them,
and each attempt is sorted by what came back:

``readers``
    Small valid NIfTI (``.nii``, ``.nii.gz``), TIFF (raw and zlib), PNG, JPEG, ``.npy``
    files and a three-slice DICOM series, each byte-mutated ``--n`` times (bytes
    overwritten, then maybe cut short or grown by inserted bytes) and read with
    ``read_image``. A ``.nii.gz`` is also mutated inside its gzip stream, and a damaged
    DICOM slice is read both by itself and as part of its folder.
``handmade``
    One row per hand-made bad file: headers that claim far more than the file holds, TIFFs
    without pages, DICOM series without positions, with mixed orientations, duplicate
    positions, NaN spacings and so on. ``expected`` says what a careful reader does.
``checkpoints``
    A tiny checkpoint (``save_checkpoint`` of ``random_model(SMOKE_ARCHITECTURE)``)
    byte-mutated anywhere, in its pickle, in its zip directory, or cut short, then loaded
    with ``load_checkpoint``; hand-made payloads of the wrong structure; and pickles whose
    ``__reduce__`` runs code, which must never run (a marker file tells).
``store``
    An on-disk ``EmbeddingStore`` of the tiny model, damaged one way per row (chunk
    deleted, NaN, truncated, swapped, garbled metadata ...), reopened, looked up and
    repaired with ``embed_slice``.
``kill``
    A process saving annotations in a loop, killed with SIGKILL at a random moment, then
    ``load_annotation``.
``cli``
    About 35 bad command lines, each run in its own process like the console script.

Columns
-------
``ok``, ``clear_error``, ``raw_traceback`` and ``hang`` (and for command lines
``other_exit``) split ``count``:

``ok``
    Read or run fine (a warning still counts as ok; ``warnings`` counts the attempts that
    warned).
``clear_error``
    An ``ActiveSamError`` (its subclasses included); for the command line, exit status 2
    with one ``napari-active-sam...: error:`` line last on stderr and no ``Traceback``.
``raw_traceback``
    Any other exception; for the command line, a ``Traceback`` on stderr.
``hang``
    Longer than ``--hang-seconds`` (an alarm interrupts Python code; a call stuck in C code
    is counted once it returns). Commands get ``--command-seconds``.
``other_exit``
    A command that failed without a clean message and without a traceback.

The other columns are flags, counted on top: ``over_memory`` (peak of tracemalloc, which
sees numpy's arrays, or of the resident set's growth, which sees torch's, above
``--memory-mib``), ``bad_output`` (a reader returned an empty image, one of fewer than two
axes, or a scale that is not one finite positive number per axis), ``code_executed`` (a
malicious pickle ran), ``silent_reuse`` (a damaged store entry was returned as valid),
``not_repaired`` (``embed_slice`` did not give the sound embedding back),
``mixed_restore`` (a restored annotation mixed two saves), ``lost_result`` (no save found
although one had finished), ``temp_left`` (a killed save left a temporary file) and
``temp_after_load`` (still there after ``load_annotation``).

``findings`` lists every raw traceback, excess of memory, hang, silent reuse, executed
pickle, mixed or lost restore and unclean exit, grouped by exception and message (digits
folded), with the first case's input and mutation, so each can be reproduced from
``--seed``.

The JSON report goes to stdout, progress to stderr. The run is seeded: the same ``--seed``
and ``--n`` damage the same bytes.

Examples
--------
Quick run (under a minute on two CPU cores)::

    python benchmarks/attacks.py --quick

Full run (300 mutations per format; about three minutes on two CPU cores)::

    python benchmarks/attacks.py --markdown attacks.md > attacks.json

One family only, with the inputs that led to findings kept for a closer look::

    python benchmarks/attacks.py --only checkpoints --cases /tmp/cases
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import pickle
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_active_sam.core.errors import ActiveSamError

FAMILIES = ("readers", "handmade", "checkpoints", "store", "kill", "cli")
GENERAL = ("ok", "clear_error", "raw_traceback", "over_memory", "hang", "warnings")
FLAGS = (
    "bad_output",
    "code_executed",
    "silent_reuse",
    "not_repaired",
    "mixed_restore",
    "lost_result",
    "temp_left",
    "temp_after_load",
    "other_exit",
)
"""Columns that only some rows have, in the order the Markdown table shows them."""
ALARMING = (
    "raw_traceback",
    "over_memory",
    "hang",
    "bad_output",
    "code_executed",
    "silent_reuse",
    "not_repaired",
    "mixed_restore",
    "lost_result",
    "other_exit",
)
"""Outcomes and flags that make a finding."""


# ----------------------------------------------------------------------------- measuring
class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that ``except Exception`` cannot swallow it."""


def _raise_hang(*_):
    raise _Hang("interrupted by the alarm")


def _memory() -> tuple[int, int]:
    """(resident bytes now, peak resident bytes since the last reset) of this process."""
    values = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, amount, _ = line.split()
                values[name] = int(amount) * 1024
    return values.get("VmRSS:", 0), values.get("VmHWM:", 0)


def _reset_peak() -> None:
    """Reset the peak resident set size to the current one (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


@dataclass
class Attempt:
    """What one call did."""

    outcome: str  # ok, clear_error, raw_traceback or hang
    error: BaseException | None
    peak: int
    traced: int
    resident: int
    seconds: float
    warned: int
    value: Any = None


class Limits:
    """The bounds an attempt is measured against."""

    memory = 64 * 2**20
    hang = 60
    command = 120


def attempt(call: Callable[[], Any]) -> Attempt:
    """Run ``call`` under an alarm, tracemalloc and the resident-set peak, warnings caught."""
    start, _ = _memory()
    _reset_peak()
    tracemalloc.start()
    previous = signal.signal(signal.SIGALRM, _raise_hang)
    signal.alarm(Limits.hang)
    began = time.perf_counter()
    error, value = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = call()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: B036 - the product's SystemExit is a finding too
            error = exc
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - began
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    resident = _memory()[1] - start
    peak = max(traced, resident)
    if isinstance(error, _Hang) or seconds > Limits.hang:
        outcome = "hang"
    elif error is None:
        outcome = "ok"
    elif isinstance(error, ActiveSamError):
        outcome = "clear_error"
    else:
        outcome = "raw_traceback"
    return Attempt(outcome, error, peak, traced, resident, seconds, len(caught), value)


def describe_error(error: BaseException | None) -> dict[str, str]:
    """Type, first message line and where it was raised (innermost frame, and innermost
    frame in napari_active_sam)."""
    if error is None:
        return {}
    text = str(error).strip().splitlines()
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "napari_active_sam" in f.filename]
    where = {
        "error": f"{type(error).__module__}.{type(error).__qualname__}".replace("builtins.", ""),
        "message": (text[0] if text else "")[:300],
    }
    if frames:
        f = frames[-1]
        where["raised_at"] = f"{_short(f.filename)}:{f.lineno} in {f.name}"
    if ours and ours[-1] is not frames[-1]:
        f = ours[-1]
        where["via"] = f"{_short(f.filename)}:{f.lineno} in {f.name}"
    return where


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# ---------------------------------------------------------------------------- the table
@dataclass
class Row:
    """One attack's tally."""

    attack: str
    family: str
    flags: tuple[str, ...] = ()
    count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.counts = dict.fromkeys(GENERAL + self.flags, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "family": self.family,
            "count": self.count,
            **self.counts,
            **self.extra,
        }


class Campaign:
    """Rows, findings and the shared random generator of one run."""

    def __init__(self, seed: int, n: int, quick: bool, cases: Path | None, work: Path):
        self.seed, self.n, self.quick = seed, n, quick
        self.rng = np.random.default_rng(seed)
        """The current family's generator (see :meth:`start`)."""
        self.rows: list[Row] = []
        self.findings: dict[tuple, dict[str, Any]] = {}
        self.cases = cases
        self.work = work

    def start(self, family: str) -> None:
        """Seed the generator for ``family`` alone, so that ``--only`` repeats its damage."""
        self.rng = np.random.default_rng([self.seed, FAMILIES.index(family)])

    def row(self, attack: str, family: str, flags: Iterable[str] = ()) -> Row:
        row = Row(attack, family, tuple(flags))
        self.rows.append(row)
        return row

    def folder(self, name: str) -> Path:
        """A new empty folder under the run's work folder."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))

    def record(
        self,
        row: Row,
        result: Attempt | None,
        case: str,
        *,
        outcome: str | None = None,
        flags: dict[str, int] | None = None,
        detail: dict[str, Any] | None = None,
        keep: Iterable[Path] = (),
    ) -> None:
        """Count one case in ``row``; alarming outcomes and flags become findings."""
        outcome = outcome or result.outcome
        row.count += 1
        row.counts[outcome] += 1
        raised = [outcome] if outcome in ALARMING else []
        if result is not None:
            row.counts["warnings"] += bool(result.warned)
            if result.peak > Limits.memory:
                row.counts["over_memory"] += 1
                raised.append("over_memory")
        for flag, amount in (flags or {}).items():
            row.counts[flag] += amount
            if amount and flag in ALARMING:
                raised.append(flag)
        for kind in raised:
            error = describe_error(result.error if result else None)
            error.update(detail or {})
            message = re.sub(r"\d+", "N", error.get("message", ""))[:160]
            key = (row.attack, kind, error.get("error"), message)
            finding = self.findings.get(key)
            if finding is None:
                finding = {
                    "attack": row.attack,
                    "kind": kind,
                    "count": 0,
                    "first_case": case,
                    **error,
                }
                if result is not None:
                    finding["traced_peak_mib"] = round(result.traced / 2**20, 1)
                    finding["resident_growth_mib"] = round(result.resident / 2**20, 1)
                    finding["seconds"] = round(result.seconds, 2)
                if self.cases is not None:
                    finding["kept"] = self._keep(row, kind, list(keep))
                self.findings[key] = finding
            finding["count"] += 1

    def _keep(self, row: Row, kind: str, paths: list[Path]) -> list[str]:
        target = self.cases / re.sub(r"[^\w.-]+", "_", f"{row.attack}-{kind}-{len(self.findings)}")
        kept = []
        for path in paths:
            if path.exists():
                target.mkdir(parents=True, exist_ok=True)
                copy = shutil.copytree if path.is_dir() else shutil.copy2
                copy(path, target / path.name)
                kept.append(str(target / path.name))
        return kept


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ damage
def damage(original: bytes, rng: np.random.Generator, header: int = 1024) -> tuple[bytes, str]:
    """``original`` with 1 to 8 bytes overwritten (half the time all within the first
    ``header`` bytes), then maybe cut short or grown by 1 to 64 inserted bytes; and a
    description of what was done."""
    data = bytearray(original)
    span = min(header, len(data)) if rng.random() < 0.5 else len(data)
    changes = {}
    for _ in range(int(rng.integers(1, 9))):
        where = int(rng.integers(0, span))
        data[where] = int(rng.integers(0, 256))
        changes[where] = data[where]
    steps = ["overwrote " + ", ".join(f"@{k}={v:#04x}" for k, v in sorted(changes.items()))]
    how = int(rng.integers(0, 3))
    if how == 1:
        keep = int(rng.integers(0, len(data)))
        data = data[:keep]
        steps.append(f"cut to {keep} of {len(original)} bytes")
    elif how == 2:
        where = int(rng.integers(0, len(data) + 1))
        extra = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        data[where:where] = extra
        steps.append(f"inserted {len(extra)} bytes at {where}")
    return bytes(data), "; ".join(steps)


def overwrite_in(
    original: bytes, start: int, stop: int, rng: np.random.Generator
) -> tuple[bytes, str]:
    """``original`` with 1 to 8 bytes in ``[start, stop)`` overwritten."""
    data = bytearray(original)
    changes = {}
    for _ in range(int(rng.integers(1, 9))):
        where = int(rng.integers(start, stop))
        data[where] = int(rng.integers(0, 256))
        changes[where] = data[where]
    return bytes(data), "overwrote " + ", ".join(f"@{k}={v:#04x}" for k, v in changes.items())


# ------------------------------------------------------------------------------- files
VOLUME_SHAPE = (3, 12, 10)


def small_volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, VOLUME_SHAPE).astype(np.int16)


def write_dicom_slice(
    path: Path,
    series_uid: str,
    z: float,
    pixels: np.ndarray,
    **elements: Any,
) -> None:
    """One CT slice as a scanner writes it: position (0, 0, z), axial, 0.6 x 0.7 mm pixels,
    2.5 mm thick, 16-bit stored values rescaled by 2 and -1024. ``elements`` override or,
    with None, remove data elements by keyword."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=[path.name, series_uid, str(z)]
    )
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID = file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "CT"
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.6, 0.7]
    ds.SliceThickness = 2.5
    ds.RescaleSlope = 2.0
    ds.RescaleIntercept = -1024.0
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the invalid values asked for
        for keyword, value in elements.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)


def write_series(
    folder: Path,
    count: int = 3,
    per_slice: Callable[[int], dict[str, Any]] | None = None,
) -> list[Path]:
    """A series of ``count`` slices 2 mm apart in ``folder``; ``per_slice(z)`` gives each
    slice's overridden elements."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = small_volume()
    paths = []
    for z in range(count):
        path = folder / f"s{z}.dcm"
        write_dicom_slice(
            path,
            "5.5",
            2.0 * z,
            volume[z % len(volume)].astype(np.uint16),
            **(per_slice(z) if per_slice else {}),
        )
        paths.append(path)
    return paths


def reader_originals(folder: Path) -> dict[str, bytes]:
    """One small valid file of each kind the readers take."""
    import imageio.v3 as iio
    import nibabel
    import tifffile

    volume = small_volume()
    nibabel.save(nibabel.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1])), folder / "a.nii")
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / "a.nii.gz")
    tifffile.imwrite(folder / "a.tif", volume)
    tifffile.imwrite(folder / "z.tif", volume, compression="zlib")
    iio.imwrite(folder / "a.png", volume[0].astype(np.uint8))
    y, x = np.mgrid[:24, :32]
    iio.imwrite(folder / "a.jpg", (4 * x + 3 * y).astype(np.uint8))
    np.save(folder / "a.npy", volume)
    write_series(folder / "dicom")
    names = [
        "a.nii",
        "a.nii.gz",
        "a.tif",
        "z.tif",
        "a.png",
        "a.jpg",
        "a.npy",
        "dicom/s0.dcm",
        "dicom/s1.dcm",
        "dicom/s2.dcm",
    ]
    return {name: (folder / name).read_bytes() for name in names}


def image_is_sound(image: Any) -> bool:
    """Whether ``read_image`` returned a non-empty array of real numbers (what napari shows)
    of at least two spatial axes with one finite, positive scale per spatial axis."""
    data = getattr(image, "data", None)
    if not isinstance(data, np.ndarray) or data.size == 0:
        return False
    if data.dtype.names is not None or np.iscomplexobj(data):
        return False
    spatial = data.ndim - bool(getattr(image, "rgb", False))
    scale = tuple(getattr(image, "scale", ()))
    return (
        spatial >= 2 and len(scale) == spatial and all(np.isfinite(scale) & (np.array(scale) > 0))
    )


def describe_image(image: Any) -> str:
    data = image.data
    scale = ", ".join(f"{float(v):g}" for v in image.scale)
    return f"{data.dtype} {data.shape}{' rgb' if image.rgb else ''}, scale ({scale})"


# ------------------------------------------------------------------- 1. mutated files
def attack_readers(campaign: Campaign) -> None:
    from napari_active_sam.core.data.files import read_image

    sound = campaign.folder("originals")
    originals = reader_originals(sound)
    for name in originals:  # warm up: each library's first read loads plugins and tables
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_image(sound / name)
    rng = campaign.rng

    def payload(original: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
        inner, what = damage(gzip.decompress(original), rng, header=352)
        return gzip.compress(inner, mtime=0), f"inside the gzip stream: {what}"

    plans = [
        ("NIfTI .nii", "a.nii", damage),
        ("NIfTI .nii.gz", "a.nii.gz", damage),
        ("NIfTI .nii.gz (inside the gzip stream)", "a.nii.gz", payload),
        ("TIFF", "a.tif", damage),
        ("TIFF (zlib)", "z.tif", damage),
        ("PNG", "a.png", damage),
        ("JPEG", "a.jpg", damage),
        ("NumPy .npy", "a.npy", damage),
        ("DICOM (damaged slice opened)", "dicom/s1.dcm", damage),
        ("DICOM (folder with a damaged slice)", "dicom/s1.dcm", damage),
    ]
    for title, name, mutate in plans:
        row = campaign.row(f"mutated {title}", "readers", ["bad_output"])
        folder = campaign.folder("mutated")
        target = folder / name
        if name.startswith("dicom/"):  # the damaged slice sits among sound ones
            (folder / "dicom").mkdir()
            for other in ("dicom/s0.dcm", "dicom/s2.dcm"):
                (folder / other).write_bytes(originals[other])
        opened = target.parent if "folder" in title else target
        began = time.perf_counter()
        for i in range(campaign.n):
            data, what = mutate(originals[name], rng)
            target.write_bytes(data)
            result = attempt(lambda opened=opened: read_image(opened))
            bad = result.outcome == "ok" and not image_is_sound(result.value)
            case = f"{name} #{i}: {what} ({len(data)} bytes)"
            detail = {"mutation": what}
            if result.outcome == "ok":
                detail["output"] = describe_image(result.value)
            keep = [target.parent] if name.startswith("dicom/") else [target]
            campaign.record(row, result, case, flags={"bad_output": int(bad)}, detail=detail,
                            keep=keep)  # fmt: skip
        progress(f"  {row.attack}: {row.count} in {time.perf_counter() - began:.1f} s")


# --------------------------------------------------------------------- 2. handmade files
def _nifti_header(shape, dtype=np.int16, zooms=None, **fields) -> bytes:
    """A single-file NIfTI-1 header (348 bytes and the 4-byte extension flag), no data."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_dtype(dtype)
    header["dim"][0] = len(shape)
    header["dim"][1 : 1 + len(shape)] = shape
    header["pixdim"][1:4] = zooms if zooms is not None else (1.0, 1.0, 1.0)
    header["vox_offset"] = 352
    header["magic"] = b"n+1"
    for key, value in fields.items():
        header[key] = value
    return header.binaryblock + b"\0\0\0\0"


def _nifti_with_data(shape=(10, 12, 3), zooms=(0.7, 0.7, 2.0), **fields) -> bytes:
    data = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape, order="F")
    return _nifti_header(shape, zooms=zooms, **fields) + data.tobytes(order="F")


def _npy_header(shape, descr="<f8", version=(1, 0)) -> bytes:
    """A ``.npy`` header (any shape, even an invalid one) with no data after it."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    length_bytes = 2 if version == (1, 0) else 4
    padding = -(6 + 2 + length_bytes + len(text) + 1) % 64
    header = (text + " " * padding + "\n").encode("latin1")
    return np.lib.format.magic(*version) + len(header).to_bytes(length_bytes, "little") + header


def _tiff_tags(path: Path, tags: dict[str, int], compression: str | None = None) -> bytes:
    """A small TIFF with the inline values of ``tags`` replaced."""
    import tifffile

    tifffile.imwrite(path, np.ones((8, 8), np.uint8), compression=compression)
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        for name, value in tags.items():
            tag = page.tags[name]
            code = "<H" if tag.dtype == 3 else "<I"
            struct.pack_into(code, data, tag.valueoffset, value)
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR (with a correct CRC) claiming ``width`` x ``height``
    8-bit grey, then a tiny IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def _jpeg_claiming(folder: Path, width: int, height: int) -> bytes:
    import imageio.v3 as iio

    iio.imwrite(folder / "small.jpg", np.full((16, 16), 128, np.uint8))
    data = bytearray((folder / "small.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _multiframe(folder: Path, frames: int, pixels_bytes: int | None = None) -> Path:
    volume = small_volume()
    path = folder / "multi.dcm"
    write_dicom_slice(
        path,
        "7.7",
        0.0,
        volume[0],
        NumberOfFrames=frames,
        PixelData=volume.astype(np.uint16).tobytes()[:pixels_bytes],
    )
    return path


def handmade_cases() -> list[tuple[str, str, Callable[[Path], Path]]]:
    """(name, expected outcome, builder): each builder writes into an empty folder and
    returns what to open with ``read_image``."""
    volume = small_volume()

    def file(name: str, data: bytes) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            (folder / name).write_bytes(data)
            return folder / name

        return build

    def series(
        count: int = 3,
        per: Callable[[int], dict[str, Any]] | None = None,
        extra: Callable[[Path], None] | None = None,
    ) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            write_series(folder / "series", count, per_slice=per)
            if extra:
                extra(folder / "series")
            return folder / "series"

        return build

    def copy_of_slice(series_folder: Path) -> None:
        shutil.copy(series_folder / "s1.dcm", series_folder / "s1_copy.dcm")

    def second_series(series_folder: Path) -> None:
        for z in range(2):
            write_dicom_slice(
                series_folder / f"t{z}.dcm",
                "6.6",
                2.0 * z,
                volume[z],
                SeriesDescription="localiser",
            )

    def multiframe_beside(series_folder: Path) -> None:
        write_dicom_slice(
            series_folder / "multi.dcm",
            "5.5",
            10.0,
            volume[0],
            NumberOfFrames=3,
            PixelData=volume.astype(np.uint16).tobytes(),
        )

    def tiff_no_pages(folder: Path) -> Path:
        (folder / "empty.tif").write_bytes(b"II*\x00" + struct.pack("<I", 0))
        return folder / "empty.tif"

    def tiff_empty_ifd(folder: Path) -> Path:
        (folder / "empty.tif").write_bytes(b"II*\x00" + struct.pack("<IHI", 8, 0, 0))
        return folder / "empty.tif"

    def tiff_tags(tags: dict[str, int], compression=None) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            data = _tiff_tags(folder / "base.tif", tags, compression)
            (folder / "claim.tif").write_bytes(data)
            return folder / "claim.tif"

        return build

    def jpeg(folder: Path) -> Path:
        data = _jpeg_claiming(folder, 65000, 65000)
        (folder / "claim.jpg").write_bytes(data)
        return folder / "claim.jpg"

    def garbage_jpeg_frames(series_folder: Path) -> None:
        import pydicom
        from pydicom.encaps import encapsulate
        from pydicom.uid import JPEGBaseline8Bit

        for path in series_folder.glob("*.dcm"):
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
            ds.BitsAllocated = ds.BitsStored = 8
            ds.HighBit = 7
            ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG frame \xff\xd9"])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.save_as(path, enforce_file_format=True)

    def readme_only(folder: Path) -> Path:
        (folder / "series").mkdir()
        (folder / "series" / "README.txt").write_text("scanner export")
        return folder / "series"

    def object_npy(folder: Path) -> Path:
        np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
        return folder / "objects.npy"

    def multiframe(frames, pixels_bytes=None) -> Callable[[Path], Path]:
        return lambda folder: _multiframe(folder, frames, pixels_bytes)

    def cut_stack(folder: Path) -> Path:
        import tifffile

        tifffile.imwrite(folder / "stack.tif", volume, imagej=True, metadata={"axes": "ZYX"})
        whole = (folder / "stack.tif").read_bytes()
        (folder / "stack.tif").write_bytes(whole[: len(whole) * 6 // 10])
        return folder / "stack.tif"

    def tiff_of(name: str, data: np.ndarray, **options) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            import tifffile

            tifffile.imwrite(folder / name, data, **options)
            return folder / name

        return build

    def nifti_of(name: str, data: np.ndarray) -> Callable[[Path], Path]:
        def build(folder: Path) -> Path:
            import nibabel

            nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), folder / name)
            return folder / name

        return build

    nan3 = (float("nan"),) * 3
    cases = [
        (
            "NIfTI .nii.gz header claims 1000^3 int16, no data",
            "clear_error",
            file("big.nii.gz", gzip.compress(_nifti_header((1000, 1000, 1000)), mtime=0)),
        ),
        (
            "NIfTI .nii header claims 1000^3 int16, no data",
            "clear_error",
            file("big.nii", _nifti_header((1000, 1000, 1000))),
        ),
        (
            "NIfTI .nii.gz claims 2000^3 int16 over 1 MB of zeros",
            "clear_error",
            file(
                "bomb.nii.gz",
                gzip.compress(_nifti_header((2000, 2000, 2000)) + bytes(2**20), mtime=0),
            ),
        ),
        (
            "NIfTI negative dimension",
            "clear_error",
            file(
                "neg.nii", _nifti_with_data()[:42] + struct.pack("<h", -5) + _nifti_with_data()[44:]
            ),
        ),
        (
            "NIfTI 7-D header claiming 2^15 per axis",
            "clear_error",
            file("seven.nii", _nifti_header((32767,) * 7)),
        ),
        (
            "NIfTI unknown datatype code",
            "clear_error",
            file(
                "dtype.nii",
                _nifti_with_data()[:70] + struct.pack("<h", 1234) + _nifti_with_data()[72:],
            ),
        ),
        (
            "NIfTI vox_offset past the end",
            "clear_error",
            file("offset.nii", _nifti_with_data(vox_offset=10**7)),
        ),
        ("NIfTI NaN voxel sizes", "ok+warning", file("nan.nii", _nifti_with_data(zooms=nan3))),
        (
            "NIfTI zero voxel sizes",
            "ok+warning",
            file("zero.nii", _nifti_with_data(zooms=(0.0, 0.0, 0.0))),
        ),
        (
            "NIfTI infinite voxel size",
            "ok+warning",
            file("inf.nii", _nifti_with_data(zooms=(1.0, float("inf"), 1.0))),
        ),
        (
            "NumPy header claims 50000x50000 float64, no data",
            "clear_error",
            file("big.npy", _npy_header((50000, 50000))),
        ),
        (
            "NumPy v2 header claims 50000x50000 float64, no data",
            "clear_error",
            file("big2.npy", _npy_header((50000, 50000), version=(2, 0))),
        ),
        (
            "NumPy header claims a 2 GB item",
            "clear_error",
            file("void.npy", _npy_header((1,), descr="|V2000000000")),
        ),
        ("NumPy negative shape", "clear_error", file("neg.npy", _npy_header((-5, 3)))),
        ("NumPy empty array", "clear_error", file("empty.npy", _npy_header((0, 4)))),
        ("NumPy of Python objects", "clear_error", object_npy),
        (
            "NumPy header length past the end",
            "clear_error",
            file("long.npy", np.lib.format.magic(1, 0) + struct.pack("<H", 60000) + b"{}"),
        ),
        ("TIFF with 0 pages (first IFD offset 0)", "clear_error", tiff_no_pages),
        ("TIFF whose first IFD has 0 entries", "clear_error", tiff_empty_ifd),
        (
            "TIFF claims 65535x65535, 64 bytes of pixels",
            "clear_error",
            tiff_tags({"ImageWidth": 65535, "ImageLength": 65535}),
        ),
        (
            "TIFF (zlib) claims 16384x16384, one small strip",
            "clear_error",
            tiff_tags({"ImageWidth": 16384, "ImageLength": 16384}, "zlib"),
        ),
        ("TIFF strip offset past the end", "clear_error", tiff_tags({"StripOffsets": 10**8})),
        (
            "PNG IHDR claims 100000x100000",
            "clear_error",
            file("big.png", _png_claiming(100000, 100000)),
        ),
        ("PNG signature only", "clear_error", file("sig.png", b"\x89PNG\r\n\x1a\n")),
        ("JPEG SOF claims 65000x65000", "clear_error", jpeg),
        ("JPEG start marker only", "clear_error", file("soi.jpg", b"\xff\xd8")),
        (
            "DICOM series without positions or instance numbers",
            "clear_error",
            series(per=lambda z: {"ImagePositionPatient": None}),
        ),
        (
            "DICOM series without positions, with instance numbers",
            "ok+warning",
            series(per=lambda z: {"ImagePositionPatient": None, "InstanceNumber": 3 - z}),
        ),
        (
            "DICOM series without positions, repeated instance numbers",
            "clear_error",
            series(per=lambda z: {"ImagePositionPatient": None, "InstanceNumber": 1}),
        ),
        (
            "DICOM mixed orientations (3 axial, 2 sagittal)",
            "ok+warning",
            series(
                5,
                per=lambda z: (
                    {}
                    if z < 3
                    else {
                        "ImageOrientationPatient": [0, 1, 0, 0, 0, -1],
                        "ImagePositionPatient": [float(z), 0.0, 0.0],
                    }
                ),
            ),
        ),
        (
            "DICOM duplicate positions (different images)",
            "clear_error",
            series(per=lambda z: {"ImagePositionPatient": [0.0, 0.0, 2.0 * (z // 2)]}),
        ),
        ("DICOM exact copy of a slice", "ok+warning", series(extra=copy_of_slice)),
        (
            "DICOM NaN pixel spacing",
            "ok+warning",
            series(per=lambda z: {"PixelSpacing": ["nan", "nan"]}),
        ),
        ("DICOM zero pixel spacing", "ok+warning", series(per=lambda z: {"PixelSpacing": [0, 0]})),
        (
            "DICOM NaN positions",
            "clear_error",
            series(per=lambda z: {"ImagePositionPatient": ["nan", "nan", "nan"]}),
        ),
        (
            "DICOM single slice with NaN slice thickness",
            "ok+warning",
            series(1, per=lambda z: {"SliceThickness": "nan"}),
        ),
        (
            "DICOM zero orientation vectors",
            "clear_error",
            series(per=lambda z: {"ImageOrientationPatient": [0, 0, 0, 0, 0, 0]}),
        ),
        (
            "DICOM uneven spacing (a slice missing)",
            "ok+warning",
            series(4, per=lambda z: {"ImagePositionPatient": [0.0, 0.0, 2.0 * z + 4 * (z > 1)]}),
        ),
        (
            "DICOM SpacingBetweenSlices disagrees with positions",
            "ok+warning",
            series(per=lambda z: {"SpacingBetweenSlices": 7.0}),
        ),
        ("DICOM two series in one folder", "ok+warning", series(extra=second_series)),
        (
            "DICOM Rows x Columns 65535, 720 bytes of pixels",
            "clear_error",
            series(per=lambda z: {"Rows": 65535, "Columns": 65535}),
        ),
        ("DICOM Rows 0", "clear_error", series(per=lambda z: {"Rows": 0})),
        ("DICOM NumberOfFrames 100000", "clear_error", multiframe(100000)),
        ("DICOM multi-frame with half its pixels", "clear_error", multiframe(3, 360)),
        ("DICOM multi-frame file among slices", "clear_error", series(extra=multiframe_beside)),
        ("DICOM RescaleSlope 0", "clear_error", series(per=lambda z: {"RescaleSlope": 0})),
        ("DICOM RescaleSlope NaN", "clear_error", series(per=lambda z: {"RescaleSlope": "nan"})),
        (
            "DICOM BitsAllocated 0",
            "clear_error",
            series(per=lambda z: {"BitsAllocated": 0, "BitsStored": 0, "HighBit": 0}),
        ),
        (
            "DICOM JPEG transfer syntax, garbage frames",
            "clear_error",
            series(extra=garbage_jpeg_frames),
        ),
        ("DICOM folder with only a README", "clear_error", readme_only),
        (
            "DICOM ImageOrientationPatient of 7 values",
            "clear_error",
            series(per=lambda z: {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0, 0]}),
        ),
        (
            "DICOM PixelSpacing of 3 values",
            "clear_error",
            series(per=lambda z: {"PixelSpacing": [0.7, 0.7, 0.7]}),
        ),
        ("TIFF ImageJ stack cut short", "clear_error", cut_stack),
        (
            "TIFF RGB of 16-bit samples",
            "ok",
            tiff_of("rgb16.tif", np.full((16, 16, 3), 40000, np.uint16), photometric="rgb"),
        ),
        (
            "TIFF RGB of float samples",
            "clear_error",
            tiff_of("rgbf.tif", np.ones((16, 16, 3), np.float32), photometric="rgb"),
        ),
        ("TIFF of complex values", "clear_error", tiff_of("c.tif", np.ones((8, 8), np.complex64))),
        (
            "NIfTI of complex values",
            "clear_error",
            nifti_of("c.nii", np.ones((4, 4, 2), np.complex64)),
        ),
        ("NIfTI of one row", "clear_error", nifti_of("row.nii", np.arange(8, dtype=np.int16))),
    ]
    for suffix in (".nii", ".nii.gz", ".tif", ".png", ".jpg", ".npy", ".dcm"):
        cases.append((f"empty {suffix} file", "clear_error", file(f"empty{suffix}", b"")))
    return cases


def attack_handmade(campaign: Campaign) -> None:
    from napari_active_sam.core.data.files import read_image

    for name, expected, build in handmade_cases():
        row = campaign.row(f"handmade: {name}", "handmade", ["bad_output"])
        folder = campaign.folder("handmade")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target = build(folder)
        except Exception as exc:  # the file could not be made: say so rather than guess
            row.extra.update(expected=expected, message=f"not built: {exc!r}")
            continue
        result = attempt(lambda target=target: read_image(target))
        bad = result.outcome == "ok" and not image_is_sound(result.value)
        actual = result.outcome + ("+warning" if result.outcome == "ok" and result.warned else "")
        message = str(result.error).splitlines()[0][:200] if result.error else ""
        if result.outcome == "ok":
            message = describe_image(result.value)
        row.extra.update(expected=expected, actual=actual, message=message)
        campaign.record(row, result, name, flags={"bad_output": int(bad)}, keep=[target])
    progress(f"  handmade: {sum(r.family == 'handmade' for r in campaign.rows)} files")


# ----------------------------------------------------------------------- 3. checkpoints
class MaliciousPayload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path, via: str = "exec"):
        self.marker, self.via = str(marker), via

    def __reduce__(self):
        if self.via == "system":
            return os.system, (f"touch {self.marker}",)
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _member_span(path: Path, name: str) -> tuple[int, int]:
    """Byte range of a stored (uncompressed) zip member's data."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", handle.read(4))
    start = info.header_offset + 30 + name_length + extra_length
    return start, start + info.compress_size


def _replace_member(path: Path, target: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            copy.writestr(info, data if info.filename == name else source.read(info.filename))


def attack_checkpoints(campaign: Campaign) -> None:
    import torch

    from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE
    from napari_active_sam.core.engine.checkpoints import (
        load_checkpoint,
        random_model,
        save_checkpoint,
    )

    folder = campaign.folder("checkpoints")
    sound = folder / "tiny.pt"
    model = random_model(SMOKE_ARCHITECTURE, seed=0)
    save_checkpoint(sound, model.sam, SMOKE_ARCHITECTURE)
    original = sound.read_bytes()
    pickle_name = next(n for n in zipfile.ZipFile(sound).namelist() if n.endswith("data.pkl"))
    pickle_span = _member_span(sound, pickle_name)
    directory_start = zipfile.ZipFile(sound).infolist()[-1].header_offset
    load_checkpoint(sound, device="cpu")  # warm up
    target = folder / "mutated.pt"

    def load() -> Any:
        return load_checkpoint(target, device="cpu")

    def truncate(data: bytes, rng) -> tuple[bytes, str]:
        keep = int(rng.integers(0, len(data)))
        return data[:keep], f"cut to {keep} of {len(data)} bytes"

    rng = campaign.rng
    plans = [
        ("mutated checkpoint: bytes anywhere", campaign.n, lambda d, r: damage(d, r, 4096)),
        (
            f"mutated checkpoint: bytes in {pickle_name}",
            campaign.n,
            lambda d, r: overwrite_in(d, *pickle_span, r),
        ),
        (
            "mutated checkpoint: bytes in the zip directory",
            max(campaign.n // 2, 5),
            lambda d, r: overwrite_in(d, directory_start, len(d), r),
        ),
        ("mutated checkpoint: truncated", max(campaign.n // 3, 5), truncate),
    ]
    for title, count, mutate in plans:
        row = campaign.row(title, "checkpoints")
        began = time.perf_counter()
        for i in range(count):
            data, what = mutate(original, rng)
            target.write_bytes(data)
            result = attempt(load)
            campaign.record(row, result, f"#{i}: {what}", detail={"mutation": what}, keep=[target])
        progress(f"  {title}: {row.count} in {time.perf_counter() - began:.1f} s")

    # Pickles that run code when unpickled: refused unread, the marker never written.
    marker = folder / "EXECUTED"
    state = {k: v.detach().clone() for k, v in model.sam.state_dict().items()}
    arch = SMOKE_ARCHITECTURE.to_dict()

    def project(**changes) -> dict[str, Any]:
        return {
            "format": "napari-active-sam/1",
            "architecture": arch,
            "state_dict": state,
            **changes,
        }

    def evil_pickle_member(path: Path) -> None:
        _replace_member(
            sound, path, pickle_name, pickle.dumps({"format": MaliciousPayload(marker)}, protocol=2)
        )

    malicious = [
        (
            "pickle.dump of an object whose __reduce__ calls exec",
            lambda p: p.write_bytes(pickle.dumps(MaliciousPayload(marker))),
        ),
        (
            "pickle.dump of an object whose __reduce__ calls os.system",
            lambda p: p.write_bytes(pickle.dumps(MaliciousPayload(marker, "system"))),
        ),
        (
            "torch.save with a malicious object in the metadata",
            lambda p: torch.save(project(note=MaliciousPayload(marker)), p),
        ),
        (
            "torch.save with a malicious object in the state dict",
            lambda p: torch.save(project(state_dict={**state, "x": MaliciousPayload(marker)}), p),
        ),
        (
            "torch.save (legacy format) of a malicious object",
            lambda p: torch.save(MaliciousPayload(marker), p, _use_new_zipfile_serialization=False),
        ),
        (f"sound checkpoint zip with a malicious {pickle_name}", evil_pickle_member),
    ]
    for name, build in malicious:
        row = campaign.row(f"malicious checkpoint: {name}", "checkpoints", ["code_executed"])
        marker.unlink(missing_ok=True)
        build(target)
        marker.unlink(missing_ok=True)  # building must not count
        result = attempt(load)
        executed = marker.exists()
        campaign.record(row, result, name, flags={"code_executed": int(executed)}, keep=[target])
        row.extra["message"] = str(result.error).splitlines()[0][:200] if result.error else ""
        marker.unlink(missing_ok=True)

    huge = dict(arch, encoder_embed_dim=2**20, encoder_depth=4096, img_size=2**16)
    structures = [
        ("a list, not a dict", [1, 2, 3]),
        ("a tensor, not a dict", torch.zeros(3)),
        ("an empty dict", {}),
        (
            "the format key but no state_dict",
            {"format": "napari-active-sam/1", "architecture": arch},
        ),
        ("the format key, state_dict a tensor", project(state_dict=torch.zeros(2))),
        ("the format key, state_dict a list", project(state_dict=[torch.zeros(2)])),
        ("a state dict with a string value", project(state_dict={**state, "x": "text"})),
        (
            "a state dict with integer keys",
            project(state_dict=dict(enumerate(state.values()))),
        ),
        ("no architecture", {"format": "napari-active-sam/1", "state_dict": state}),
        ("architecture a list", project(architecture=[1, 2])),
        ("architecture with a text field", project(architecture=dict(arch, encoder_depth="two"))),
        ("architecture with a negative field", project(architecture=dict(arch, encoder_depth=-2))),
        ("architecture with a float field", project(architecture=dict(arch, img_size=128.5))),
        (
            "architecture with a missing field",
            project(architecture={k: v for k, v in arch.items() if k != "img_size"}),
        ),
        ("architecture of 2^20 channels x 4096 blocks", project(architecture=huge)),
        ("the sound weights in a 'model' entry", {"model": state}),
        (
            "weights of the wrong dtype (int64)",
            project(state_dict={k: v.to(torch.int64) for k, v in state.items()}),
        ),
        (
            "weights with NaN",
            project(state_dict={k: torch.full_like(v, float("nan")) for k, v in state.items()}),
        ),
        (
            "a tensor of the wrong shape",
            project(state_dict={**state, next(iter(state)): torch.zeros(7, 7)}),
        ),
    ]
    files = [
        ("an empty file", b""),
        ("a text file", b"not a checkpoint\n"),
        ("a zip that is not a checkpoint", None),
        ("a .npy file", None),
    ]
    for name, payload in structures:
        row = campaign.row(f"handmade checkpoint: {name}", "checkpoints")
        torch.save(payload, target)
        result = attempt(load)
        campaign.record(row, result, name, keep=[target])
        row.extra["message"] = str(result.error).splitlines()[0][:200] if result.error else ""
    for name, data in files:
        row = campaign.row(f"handmade checkpoint: {name}", "checkpoints")
        if name.startswith("a zip"):
            with zipfile.ZipFile(target, "w") as archive:
                archive.writestr("readme.txt", "hello")
        elif name.startswith("a .npy"):
            with open(target, "wb") as handle:
                np.save(handle, np.zeros(4))
        else:
            target.write_bytes(data)
        result = attempt(load)
        campaign.record(row, result, name, keep=[target])
        row.extra["message"] = str(result.error).splitlines()[0][:200] if result.error else ""


# ------------------------------------------------------------------ 4. embedding store
def attack_store(campaign: Campaign) -> None:
    import torch
    import zarr

    from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE
    from napari_active_sam.core.engine.checkpoints import random_model
    from napari_active_sam.core.engine.embeddings import embed_slice, encode_slices
    from napari_active_sam.core.engine.preprocess import SliceSource
    from napari_active_sam.core.engine.store import EmbeddingStore, slice_key

    model = random_model(SMOKE_ARCHITECTURE, seed=0)
    rng0 = np.random.default_rng(1)
    z, y, x = np.mgrid[:6, :40, :50]
    volume = np.full((6, 40, 50), 40, np.int16)
    volume[(y - 20) ** 2 + (x - 25) ** 2 < (8 + z) ** 2] = 700
    volume = (volume + rng0.normal(0, 10, volume.shape)).astype(np.int16)
    source = SliceSource(volume)
    pristine_path = campaign.folder("store") / "ct.zarr"
    store = EmbeddingStore(model.encoder_id, path=pristine_path)
    list(encode_slices(model, source, store))
    keys = [slice_key((i,)) for i in range(len(volume))]
    pristine = {key: embed_slice(model, source, store, (i,)) for i, key in enumerate(keys)}

    def chunk(path: Path, key: str) -> Path:
        return next(p for p in (path / key / "c").rglob("*") if p.is_file())

    def delete_chunk(path, key, rng):
        chunk(path, key).unlink()
        return "chunk deleted"

    def nan_chunk(path, key, rng):
        zarr.open_array(path / key, mode="r+")[...] = np.nan
        return "values set to NaN through zarr"

    def zero_values(path, key, rng):
        array = zarr.open_array(path / key, mode="r+")
        values = array[...]
        values.flat[int(rng.integers(0, values.size))] = 0
        array[...] = values
        return "one value set to 0 through zarr"

    def truncate_chunk(path, key, rng):
        c = chunk(path, key)
        data = c.read_bytes()
        keep = int(rng.integers(0, len(data)))
        c.write_bytes(data[:keep])
        return f"chunk cut to {keep} of {len(data)} bytes"

    def garble_chunk(path, key, rng):
        c = chunk(path, key)
        data, what = damage(c.read_bytes(), rng)
        c.write_bytes(data)
        return f"chunk {what}"

    def swap_chunk(path, key, rng):
        other = keys[(keys.index(key) + 1 + int(rng.integers(0, len(keys) - 1))) % len(keys)]
        shutil.copy(chunk(path, other), chunk(path, key))
        return f"chunk replaced by {other}'s"

    def truncate_record(path, key, rng):
        record = path / key / "zarr.json"
        text = record.read_bytes()
        keep = int(rng.integers(0, len(text)))
        record.write_bytes(text[:keep])
        return f"entry zarr.json cut to {keep} of {len(text)} bytes"

    def garble_record(path, key, rng):
        record = path / key / "zarr.json"
        data, what = damage(record.read_bytes(), rng, header=10**6)
        record.write_bytes(data)
        return f"entry zarr.json {what}"

    def edit_record_field(path, key, rng):
        record = path / key / "zarr.json"
        meta = json.loads(record.read_text())
        attrs = meta["attributes"]
        name = ["original_size", "input_size", "checksum", "signature"][int(rng.integers(0, 4))]
        if name.endswith("size"):
            axis = int(rng.integers(0, 2))
            attrs[name][axis] = int(attrs[name][axis]) + int(rng.integers(1, 9))
            what = f"{name}[{axis}] changed to {attrs[name][axis]}"
        else:
            at = int(rng.integers(0, len(attrs[name])))
            old = attrs[name][at]
            new = "0123456789abcdef".replace(old, "")[int(rng.integers(0, 15))]
            attrs[name] = attrs[name][:at] + new + attrs[name][at + 1 :]
            what = f"{name} hex digit {at} changed"
        record.write_text(json.dumps(meta, indent=2))
        return f"entry record: {what} (the rest intact)"

    def delete_entry(path, key, rng):
        shutil.rmtree(path / key)
        return "entry folder deleted"

    def garble_root(path, key, rng):
        record = path / "zarr.json"
        data, what = damage(record.read_bytes(), rng, header=10**6)
        record.write_bytes(data)
        return f"store zarr.json {what}"

    def delete_root(path, key, rng):
        (path / "zarr.json").unlink()
        return "store zarr.json deleted"

    kinds = [
        ("chunk deleted", delete_chunk),
        ("NaN written", nan_chunk),
        ("one value changed", zero_values),
        ("chunk truncated", truncate_chunk),
        ("chunk bytes garbled", garble_chunk),
        ("chunk of another entry", swap_chunk),
        ("entry metadata truncated", truncate_record),
        ("entry metadata garbled", garble_record),
        ("entry record field changed", edit_record_field),
        ("entry folder deleted", delete_entry),
        ("store metadata garbled", garble_root),
        ("store metadata deleted", delete_root),
    ]
    trials = max(3, campaign.n // 10)

    def same(found, expected) -> bool:
        return (
            torch.equal(found.features, expected.features)
            and tuple(found.original_size) == tuple(expected.original_size)
            and tuple(found.input_size) == tuple(expected.input_size)
        )

    def close(found, expected) -> bool:
        return (
            torch.allclose(found.features.float(), expected.features.float(), atol=2e-3)
            and tuple(found.original_size) == tuple(expected.original_size)
            and tuple(found.input_size) == tuple(expected.input_size)
        )

    for title, spoil in kinds:
        row = campaign.row(f"embedding store: {title}", "store", ["silent_reuse", "not_repaired"])
        began = time.perf_counter()
        for i in range(trials):
            path = campaign.folder("store") / "ct.zarr"
            shutil.copytree(pristine_path, path)
            key = keys[int(campaign.rng.integers(0, len(keys)))]
            what = spoil(path, key, campaign.rng)
            tally = {"silent_reuse": 0, "not_repaired": 0}

            def look_up(path=path, tally=tally):
                reopened = EmbeddingStore(model.encoder_id, path=path)
                for k in keys:
                    expected = pristine[k]
                    found = reopened.get(k, expected.signature)
                    if found is not None and not same(found, expected):
                        tally["silent_reuse"] = 1
                    index = (keys.index(k),)
                    if not close(embed_slice(model, source, reopened, index), expected):
                        tally["not_repaired"] = 1
                # The repaired store reopens whole.
                again = EmbeddingStore(model.encoder_id, path=path)
                for k in keys:
                    found = again.get(k, pristine[k].signature)
                    if found is None or not close(found, pristine[k]):
                        tally["not_repaired"] = 1

            result = attempt(look_up)
            campaign.record(
                row,
                result,
                f"#{i} {key}: {what}",
                flags=tally,
                detail={"mutation": f"{key}: {what}"},
                keep=[path],
            )
        progress(f"  {row.attack}: {row.count} in {time.perf_counter() - began:.1f} s")


# --------------------------------------------------------------------- 5. kill -9 saves
SAVING_LOOP = """
import sys
import numpy as np
from napari_active_sam.core.annotate.persistence import SavedAnnotation, save_annotation

shape = tuple(int(s) for s in sys.argv[2].split("x"))
labels = np.zeros(shape, np.int32)
for counter in range(1, 10**9):
    labels[...] = counter
    points = np.full((3, len(shape)), float(counter))
    save_annotation(sys.argv[1], SavedAnnotation(
        labels, points, np.array([True, False, True]), {"counter": counter}))
    if counter == 1:
        print("saved", flush=True)
"""
"""Saves as fast as it can; labels, prompts and settings all carry the save's counter."""


def attack_kill(campaign: Campaign) -> None:
    from napari_active_sam.core.annotate.persistence import load_annotation
    from napari_active_sam.core.errors import AnnotationFileError

    trials = 10 if campaign.quick else 40
    row = campaign.row(
        "kill -9 during annotation saves",
        "kill",
        ["mixed_restore", "lost_result", "temp_left", "temp_after_load"],
    )
    folder = campaign.folder("kill") / "annotation"
    shapes = ["16x16", "4x256x256", "64x64"]
    rng = campaign.rng
    for i in range(trials):
        shape = shapes[i % len(shapes)]
        saver = subprocess.Popen(
            [sys.executable, "-c", SAVING_LOOP, str(folder), shape],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        delay = float(rng.uniform(0.0, 0.05))
        try:
            started = saver.stdout.readline() == b"saved\n"
            time.sleep(delay)
        finally:
            saver.kill()  # SIGKILL: no cleanup of any kind runs
            _, errors = saver.communicate()
        if not started:
            raise RuntimeError(f"the saving loop did not start: {errors.decode()}")
        temporary = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        result = attempt(lambda: load_annotation(folder))
        flags = {"temp_left": int(bool(temporary)), "mixed_restore": 0, "lost_result": 0}
        flags["temp_after_load"] = int(any(p.name.startswith(".") for p in folder.iterdir()))
        outcome = None
        if result.outcome == "ok":
            loaded = result.value
            counters = {
                int(loaded.labels.flat[0]),
                int(loaded.labels.flat[-1]),
                int(loaded.points[0, 0]),
                int(loaded.settings.get("counter", -1)),
            }
            flags["mixed_restore"] = int(len(counters) > 1)
        elif isinstance(result.error, AnnotationFileError) and "holds no saved" in str(
            result.error
        ):
            flags["lost_result"] = 1
            outcome = "clear_error"
        case = f"trial {i}: {shape} labels, killed {delay * 1000:.0f} ms after the first save"
        campaign.record(row, result, case, outcome=outcome, flags=flags, keep=[folder])
    progress(f"  {row.attack}: {row.count}")


# ----------------------------------------------------------------------- 6. command line
ENTRY = "import sys; from napari_active_sam.cli.main import main; sys.exit(main())"
"""What the ``napari-active-sam`` console script runs."""
ERROR_LINE = re.compile(r"^napari-active-sam(?: [\w-]+)?: error: \S")


TINY = "--model tiny --checkpoint {tiny}"
BENCH = "benchmark --data {dataset} --out {work}/bench"
PRECOMPUTE = "precompute {image} --out {work}/store.zarr " + TINY
ONE_EPISODE = "--workers 1 --limit 1 --strategies random --clicks 1"
CLI_CASES = [
    # (name, heavy: loads torch or starts a dask cluster, command line in shell words)
    ("no command", False, ""),
    ("unknown command", False, "frobnicate"),
    ("make-dataset --n 0", False, "make-dataset --out {work}/ds --n 0"),
    ("make-dataset --n -3", False, "make-dataset --out {work}/ds --n -3"),
    ("make-dataset --size abc", False, "make-dataset --out {work}/ds --size abc"),
    ("make-dataset --kind bogus", False, "make-dataset --out {work}/ds --kind bogus"),
    ("make-dataset --out under a regular file", False,
     "make-dataset --out {blocker}/ds --n 1 --size 32"),
    ("benchmark --data missing", False, "benchmark --data {work}/missing --out {work}/b"),
    ("benchmark unknown strategy", False, BENCH + " --strategies ritm,bogus"),
    ("benchmark empty strategy list", False, BENCH + " --strategies ''"),
    ("benchmark strategies ',,'", False, BENCH + " --strategies ,,"),
    ("benchmark --clicks 0", False, BENCH + " --clicks 0"),
    ("benchmark --limit -5", False, BENCH + " --limit -5"),
    ("benchmark --head missing", False, BENCH + " --head {work}/missing.pt"),
    ("benchmark --window bogus", False, BENCH + " --window bogus"),
    ("benchmark --workers 0", False, BENCH + " --workers 0"),
    ("benchmark --workers with --scheduler", False,
     BENCH + " --workers 1 --scheduler tcp://127.0.0.1:9"),
    ("benchmark folder without images/ and masks/", True,
     f"benchmark --data {{empty}} --out {{work}}/b2 {TINY} {ONE_EPISODE}"),
    ("benchmark --out under a regular file", True,
     f"benchmark --data {{dataset}} --out {{blocker}}/b {TINY} {ONE_EPISODE}"),
    ("precompute --checkpoint missing", False,
     "precompute {image} --out {work}/s.zarr --checkpoint {work}/missing.pt"),
    ("precompute --workers -1", False, PRECOMPUTE + " --workers -1"),
    ("precompute missing image", True,
     f"precompute {{work}}/missing.nii --out {{work}}/s.zarr {TINY} --workers 1"),
    ("precompute unreachable --scheduler tcp://127.0.0.1:9", True,
     PRECOMPUTE + " --scheduler tcp://127.0.0.1:9"),
    ("precompute --scheduler not an address", True, PRECOMPUTE + " --scheduler ::::"),
    ("precompute a checkpoint that is not one", True,
     "precompute {image} --out {work}/s1.zarr --model tiny --checkpoint {notckpt} --workers 1"),
    ("precompute --out under a regular file", True,
     f"precompute {{image}} --out {{blocker}}/s.zarr {TINY} --workers 1"),
    ("precompute --out an ordinary non-empty folder", True,
     f"precompute {{image}} --out {{photos}} {TINY} --workers 1"),
    ("precompute a damaged image", True,
     f"precompute {{damaged}} --out {{work}}/s2.zarr {TINY} --workers 1"),
    ("precompute a folder without images", True,
     f"precompute {{photos}} --out {{work}}/s3.zarr {TINY} --workers 1"),
    ("demo --headless, unknown model", True, "demo --headless --model nosuch"),
    ("demo --headless --clicks 0", False, "demo --headless --clicks 0"),
    ("demo --headless, a checkpoint that is not one", True,
     "demo --headless --model tiny --checkpoint {notckpt}"),
    ("demo --headless --device quantum", True, f"demo --headless {TINY} --device quantum"),
    ("train-head --images 0", False, "train-head --images 0"),
    ("train-head --data missing", False, "train-head --data {work}/missing"),
    ("train-head, a checkpoint that is not one", True,
     "train-head --model tiny --checkpoint {notckpt} --images 1 --steps 1"),
    ("train-quality --crop-steps 0", False, "train-quality --crop-steps 0"),
    ("quality --images missing", False,
     "quality --images {work}/missing --masks {empty} --out {work}/q.csv"),
    ("quality, images without masks", True,
     "quality --images {photos} --masks {empty} --out {work}/q.csv"),
]  # fmt: skip
"""Bad command lines; ``{name}`` stands for a file or folder made by :func:`_cli_fixtures`."""
QUICK_HEAVY = ("precompute a checkpoint that is not one", "demo --headless --device quantum")
"""The heavy command lines a ``--quick`` run still tries."""


def _cli_fixtures(campaign: Campaign, folder: Path) -> dict[str, str]:
    import nibabel
    import tifffile

    from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE
    from napari_active_sam.core.engine.checkpoints import random_model, save_checkpoint

    places = {"work": folder / "work"}
    places["work"].mkdir()
    places["tiny"] = folder / "tiny.pt"
    save_checkpoint(places["tiny"], random_model(SMOKE_ARCHITECTURE).sam, SMOKE_ARCHITECTURE)
    places["notckpt"] = folder / "notes.pt"
    places["notckpt"].write_text("this is not a checkpoint\n")
    places["image"] = folder / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(small_volume(), np.eye(4)), places["image"])
    places["damaged"] = folder / "damaged.nii"
    nibabel.save(nibabel.Nifti1Image(small_volume(), np.eye(4)), places["damaged"])
    places["damaged"].write_bytes(places["damaged"].read_bytes()[:400])
    places["blocker"] = folder / "a_file"
    places["blocker"].write_text("")
    places["photos"] = folder / "photos"
    places["photos"].mkdir()
    (places["photos"] / "notes.txt").write_text("mine")
    places["empty"] = folder / "empty"
    places["empty"].mkdir()
    places["dataset"] = folder / "dataset"
    for part in ("images", "masks"):
        (places["dataset"] / part).mkdir(parents=True)
    y, x = np.mgrid[:64, :64]
    disc = (y - 30) ** 2 + (x - 34) ** 2 < 12**2
    tifffile.imwrite(places["dataset"] / "images" / "disc.tif", (60 + 120 * disc).astype(np.uint8))
    tifffile.imwrite(places["dataset"] / "masks" / "disc.tif", disc.astype(np.int32))
    return {name: str(path) for name, path in places.items()}


def classify_command(returncode: int | None, stderr: str) -> str:
    if returncode is None:
        return "hang"
    if "Traceback" in stderr:
        return "raw_traceback"
    if returncode == 0:
        return "ok"
    last = [line for line in stderr.splitlines() if line.strip()][-1:]
    if returncode == 2 and last and ERROR_LINE.match(last[0]):
        return "clear_error"
    return "other_exit"


def attack_cli(campaign: Campaign) -> None:
    folder = campaign.folder("cli")
    places = _cli_fixtures(campaign, folder)
    env = dict(
        os.environ, NAPARI_ACTIVE_SAM_CACHE=str(folder / "cache"), NAPARI_ACTIVE_SAM_DEVICE="cpu"
    )
    row = campaign.row("bad command lines", "cli", ["other_exit"])
    lines = []
    for name, heavy, line in CLI_CASES:
        if heavy and campaign.quick and name not in QUICK_HEAVY:
            continue
        argv = [word.format(**places) for word in shlex.split(line)]
        began = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", ENTRY, *argv],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = process.communicate(timeout=Limits.command)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the command's own session: it and its workers
            _, err = process.communicate()
            returncode = None
        seconds = time.perf_counter() - began
        stderr = err.decode(errors="replace")
        outcome = classify_command(returncode, stderr)
        shown = [line for line in stderr.splitlines() if line.strip()]
        message = shown[-1][:240] if shown else ""
        if outcome == "raw_traceback":
            tail = [line for line in shown if re.match(r"^[\w.]+(Error|Exception|Exit)\b", line)]
            message = (tail[-1] if tail else message)[:240]
        detail = {"argv": " ".join(argv), "exit": returncode, "message": message}
        if outcome in ("raw_traceback", "other_exit", "hang"):
            detail["stderr_tail"] = "\n".join(shown[-6:])[-800:]
        if outcome == "raw_traceback":  # what printed the traceback: the command or a logger
            first = next(i for i, line in enumerate(shown) if "Traceback" in line)
            detail["before_traceback"] = shown[first - 1][:240] if first else ""
        campaign.record(row, None, name, outcome=outcome, detail=detail)
        lines.append(
            {
                "case": name,
                "outcome": outcome,
                "exit": returncode,
                "seconds": round(seconds, 1),
                "message": message,
            }
        )
        progress(f"  cli {outcome:13} {seconds:5.1f} s  {name}")
    row.extra["cases"] = lines


# ------------------------------------------------------------------------------ report
def markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    flags = [f for f in FLAGS if any(f in r for r in rows)]
    columns = ["attack", "count", *GENERAL, *flags]
    out = [
        f"# Attack campaign (seed {report['seed']}, n {report['n']}"
        f"{', quick' if report['quick'] else ''}; {report['wall_seconds']:.0f} s)",
        "",
        f"Memory bound {report['memory_mib']} MiB, alarm {report['hang_seconds']} s per call "
        f"({report['command_seconds']} s per command).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c == "attack" else "--:" for c in columns) + "|",
    ]
    for row in rows:
        cells = [str(row.get(c, "–")) for c in columns]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    handmade = [r for r in rows if r["family"] == "handmade" or "message" in r]
    if handmade:
        out += [
            "",
            "## Hand-made inputs",
            "",
            "| attack | expected | actual | message |",
            "|---|---|---|---|",
        ]
        for r in handmade:
            actual = r.get("actual") or next(k for k in GENERAL[:5] if r.get(k))
            message = str(r.get("message", "")).replace("|", "\\|")
            out.append(f"| {r['attack']} | {r.get('expected', '')} | {actual} | {message} |")
    for r in rows:
        if r["family"] == "cli":
            out += [
                "",
                "## Command lines",
                "",
                "| case | outcome | exit | s | last line |",
                "|---|---|--:|--:|---|",
            ]
            for c in r["cases"]:
                message = c["message"].replace("|", "\\|")
                out.append(
                    f"| {c['case']} | {c['outcome']} | {c['exit']} | {c['seconds']} | {message} |"
                )
    out += ["", "## Findings", ""]
    if not report["findings"]:
        out.append("None.")
    out += [_finding_line(f) for f in report["findings"]]
    return "\n".join(out) + "\n"


def _finding_line(finding: dict[str, Any]) -> str:
    """One finding as a Markdown list item: what, how often, where, and the first case."""
    parts = []
    if "error" in finding:
        parts.append(f"`{finding['error']}`: {finding.get('message', '')}")
    elif finding.get("message"):
        parts.append(f"last line: {finding['message']}")
    if finding.get("before_traceback"):
        parts.append(f"traceback printed after: {finding['before_traceback']}")
    if "raised_at" in finding:
        parts.append(f"raised at {finding['raised_at']}")
    if "via" in finding:
        parts.append(f"via {finding['via']}")
    if finding["kind"] == "over_memory":
        parts.append(f"traced peak {finding['traced_peak_mib']} MiB, resident growth "
                     f"{finding['resident_growth_mib']} MiB")  # fmt: skip
    if "output" in finding:
        parts.append(f"returned {finding['output']}")
    parts.append(f"first case: {finding.get('argv') or finding['first_case']}")
    text = "; ".join(part.replace("|", "\\|") for part in parts)
    return f"- **{finding['kind']}** × {finding['count']} in *{finding['attack']}*: {text}"


ATTACKS = {
    "readers": attack_readers,
    "handmade": attack_handmade,
    "checkpoints": attack_checkpoints,
    "store": attack_store,
    "kill": attack_kill,
    "cli": attack_cli,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--n", type=int, default=None, help="mutations per format (default 300, 30 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    parser.add_argument(
        "--only",
        default=",".join(FAMILIES),
        help=f"comma-separated families ({', '.join(FAMILIES)})",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument("--cases", type=Path, help="keep the inputs of findings in this folder")
    parser.add_argument("--memory-mib", type=int, default=64)
    parser.add_argument("--hang-seconds", type=int, default=60)
    parser.add_argument("--command-seconds", type=int, default=120)
    args = parser.parse_args(argv)
    families = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    n = args.n if args.n is not None else (30 if args.quick else 300)
    Limits.memory = args.memory_mib * 2**20
    Limits.hang = args.hang_seconds
    Limits.command = args.command_seconds

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attacks-") as work:
        campaign = Campaign(args.seed, n, args.quick, args.cases, Path(work))
        for name in families:
            progress(f"{name} ...")
            started = time.perf_counter()
            campaign.start(name)
            ATTACKS[name](campaign)
            progress(f"{name}: {time.perf_counter() - started:.1f} s")
    report = {
        "seed": args.seed,
        "n": n,
        "quick": args.quick,
        "families": families,
        "wall_seconds": round(time.perf_counter() - began, 1),
        "memory_mib": args.memory_mib,
        "hang_seconds": args.hang_seconds,
        "command_seconds": args.command_seconds,
        "rows": [row.as_dict() for row in campaign.rows],
        "findings": sorted(
            campaign.findings.values(), key=lambda f: (f["kind"], f["attack"], -f["count"])
        ),
    }
    print(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
