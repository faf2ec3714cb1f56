"""Shared fixtures: tiny SAM configurations built from segment-anything's own modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE, Architecture
from napari_active_sam.core.engine.checkpoints import random_model, save_checkpoint
from napari_active_sam.core.progress import drain

TINY = SMOKE_ARCHITECTURE


@pytest.fixture
def tiny_arch() -> Architecture:
    return TINY


@pytest.fixture
def tiny_model():
    return random_model(TINY, seed=0)


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_model.sam, TINY)
    return path


@pytest.fixture
def ct_volume() -> np.ndarray:
    """(6, 40, 50) int16 volume in Hounsfield-like units: a bright disc on soft tissue."""
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:6, :40, :50]
    volume = np.full((6, 40, 50), 40, np.int16)
    volume[(y - 20) ** 2 + (x - 25) ** 2 < (8 + z) ** 2] = 700
    return (volume + rng.normal(0, 10, volume.shape)).astype(np.int16)


@pytest.fixture(scope="session")
def tiny_examples():
    """Click sets simulated with the tiny random model on two generated scenes."""
    from napari_active_sam.core.active.head_training import generated_examples

    return drain(generated_examples(random_model(TINY, seed=0), 2, seed=5, clicks=3))


@pytest.fixture(scope="session")
def tiny_head(tiny_examples):
    """A Bayesian head fitted (briefly) for the tiny random model."""
    from napari_active_sam.core.active.head_training import HeadConfig, fit_head

    config = HeadConfig(steps=30, fit_pixels=3000)
    return drain(fit_head(tiny_examples, random_model(TINY, seed=0), config))


def write_dicom_slice(path, series_uid, z, pixels, slope=2.0, intercept=-1024.0, **elements):
    """Write one CT slice of 16-bit stored values as a DICOM file, the way a scanner would:
    position (0, 0, z), 0.6 × 0.7 mm pixels, 2.5 mm thick; ``elements`` override or, with
    None, remove data elements by keyword."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    # The same file name, series and place give the same UID: files are alike run to run.
    meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=[Path(path).name, series_uid, str(z)]
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "CT"
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.6, 0.7]
    ds.SliceThickness = 2.5
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in elements.items():  # None removes an element
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="session")
def dicom_slice():
    """:func:`write_dicom_slice`, for tests that write DICOM files."""
    return write_dicom_slice


@pytest.fixture(scope="session")
def sample_ct():
    """The bundled sample CT volume, its organ labels and its spacing (z, y, x) in mm."""
    import json

    import tifffile

    from napari_active_sam.core.engine.downloads import bundled_path

    volume = tifffile.imread(bundled_path("ct_volume.tif"))
    labels = tifffile.imread(bundled_path("ct_volume_labels.tif"))
    spacing = json.loads(bundled_path("samples.json").read_text())["ct_volume"]["spacing"]
    return volume, labels, tuple(spacing)
