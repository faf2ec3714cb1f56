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


def test_entry_point_and_classifier():
    [point] = [e for e in entry_points(group="napari.manifest") if e.name == "napari-active-sam"]
    assert point.value == "napari_active_sam:napari.yaml"
    metadata = distribution("napari-active-sam").metadata
    assert "Framework :: napari" in metadata.get_all("Classifier")
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
