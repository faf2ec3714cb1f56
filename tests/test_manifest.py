"""The installed package is a valid napari plugin that carries its manifest and data."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution, entry_points
from importlib.resources import files
from pathlib import Path

import yaml


def test_manifest_and_sample_data_are_inside_the_package():
    package = files("napari_active_sam")
    manifest = package / "napari.yaml"
    assert manifest.is_file()
    assert yaml.safe_load(manifest.read_text())["name"] == "napari-active-sam"
    assert (package / "sample_data" / "README.md").is_file()
    assert (package / "sample_data" / "demo_model.head.pt").is_file()  # the demo's Bayes head


def test_entry_point_and_classifier():
    [point] = [e for e in entry_points(group="napari.manifest") if e.name == "napari-active-sam"]
    assert point.value == "napari_active_sam:napari.yaml"
    metadata = distribution("napari-active-sam").metadata
    assert "Framework :: napari" in metadata.get_all("Classifier")
    assert metadata["License-Expression"] == "BSD-3-Clause"  # its text ships as LICENSE
    core = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert not any(q in " ".join(core).lower() for q in ("pyqt", "pyside"))
    assert {"all", "testing"} <= set(metadata.get_all("Provides-Extra"))


def test_npe2_validates_the_installed_plugin():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", "napari-active-sam"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in (result.stdout + result.stderr).lower()


def test_sample_data_contributions_give_images_with_ground_truth():
    from napari_active_sam import _sample_data

    for make, ndim in ((_sample_data.ct_volume, 3), (_sample_data.ultrasound, 2),
                       (_sample_data.nuclei, 2)):  # fmt: skip
        (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = make()
        assert (image_kind, labels_kind) == ("image", "labels")
        assert image.ndim == ndim and image.shape == labels.shape
        assert labels.max() >= 1 and labels_meta["name"].endswith("ground truth")
        assert len(image_meta["scale"]) == ndim
    (ct, meta, _), (organs, _, _) = _sample_data.ct_volume()
    assert ct.dtype.kind == "i" and ct.min() < -900 and meta["scale"] == (2.5, 0.8, 0.8)
    assert set(range(8)) == set(map(int, set(organs.ravel().tolist())))


def test_the_manifest_names_what_the_reader_takes():
    from napari_active_sam.io import PLUGIN, READER_SUFFIXES

    manifest = yaml.safe_load((files("napari_active_sam") / "napari.yaml").read_text())
    assert manifest["name"] == PLUGIN
    [reader] = manifest["contributions"]["readers"]
    assert sorted(reader["filename_patterns"]) == sorted(f"*{s}" for s in READER_SUFFIXES)
    assert reader["accepts_directories"]  # DICOM series folders
