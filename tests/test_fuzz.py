"""Damaged files through the readers: byte-mutated NIfTI, TIFF, PNG, NumPy and DICOM files
raise only the project's own errors, stay within a memory bound and finish.

Hypothesis draws the damage (overwritten bytes, a cut, inserted bytes) from a fixed seed, so
a run is repeatable; each example is bounded by an alarm far above its normal few
milliseconds, which only an endless loop would reach.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
import warnings
from contextlib import contextmanager, suppress

import imageio.v3 as iio
import nibabel
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from napari_active_sam.core.data.files import read_image
from napari_active_sam.core.errors import ActiveSamError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
"""Mutated files per format (``FUZZ_EXAMPLES`` sets more for a longer campaign)."""
MEMORY_BOUND = 64 * 2**20
"""Peak bytes (traced by tracemalloc, numpy's arrays included) one read may take: the
originals are a few kilobytes, so only a header trusted blindly could come near it."""
HANG_SECONDS = 60


def _originals(folder, write_dicom_slice):
    """One small, valid file of each format."""
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, (3, 12, 10)).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(volume, np.diag([0.7, 0.7, 2.0, 1])), folder / "a.nii")
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / "a.nii.gz")
    tifffile.imwrite(folder / "a.tif", volume, photometric="minisblack")  # three slices
    iio.imwrite(folder / "a.png", volume[0].astype(np.uint8))
    np.save(folder / "a.npy", volume)
    series = folder / "dicom"
    series.mkdir()
    for z in range(3):
        write_dicom_slice(series / f"s{z}.dcm", "5.5", 2.0 * z, volume[z].astype(np.uint16))
    files = ["a.nii", "a.nii.gz", "a.tif", "a.png", "a.npy", *(f"dicom/s{z}.dcm" for z in range(3))]
    return {name: (folder / name).read_bytes() for name in files}


@pytest.fixture(scope="module")
def originals(tmp_path_factory, dicom_slice):
    return _originals(tmp_path_factory.mktemp("originals"), dicom_slice)


@st.composite
def damage(draw, original: bytes) -> bytes:
    """``original`` with some bytes overwritten, then maybe cut short or grown."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(data) - 1))
        data[where] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from(["none", "cut", "insert"]))
    if cut == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif cut == "insert":
        where = draw(st.integers(0, len(data)))
        data[where:where] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@contextmanager
def alarm(seconds: int):
    def stop(*_):
        raise TimeoutError(f"a read took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz", "a.tif", "a.png", "a.npy", "dicom/s1.dcm"])
def test_mutated_files_raise_only_the_projects_errors(name, originals, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mutated")
    if name.startswith("dicom/"):  # the damaged slice sits among two sound ones
        (folder / "dicom").mkdir()
        for other in ("dicom/s0.dcm", "dicom/s2.dcm"):
            (folder / other).write_bytes(originals[other])
    target = folder / name

    @seed(hash(name) % 2**32)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(data=damage(originals[name]))
    def read_damaged(data):
        target.write_bytes(data)
        tracemalloc.start()
        try:
            with alarm(HANG_SECONDS), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what a reader warns of is not the point here
                with suppress(ActiveSamError):
                    read_image(target)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < MEMORY_BOUND, f"{peak / 2**20:.0f} MiB for a {len(data)}-byte file"

    read_damaged()
