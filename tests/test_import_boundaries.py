"""core/ must import neither Qt nor napari (so it runs on clusters and in scripts)."""

import subprocess
import sys

GUI_MODULES = ("qtpy", "napari", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6")


def test_core_modules_import_no_gui_package():
    code = (
        "import pkgutil, sys, importlib\n"
        "import napari_active_sam.core as core\n"
        "for info in pkgutil.walk_packages(core.__path__, 'napari_active_sam.core.'):\n"
        "    importlib.import_module(info.name)\n"
        "import napari_active_sam.cli, napari_active_sam.io\n"
        f"bad = [m for m in {GUI_MODULES!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"core imported GUI packages: {result.stdout}"


def test_importing_the_package_warns_nothing():
    """Importing every module of core/, the command line and the reader, and laplace-torch
    as a head is fitted, with every warning an error: a user's console stays clean
    (laplace-torch's dependencies warn at import under newer torch unless told not to)."""
    code = (
        "import pkgutil, importlib\n"
        "import napari_active_sam.core as core\n"
        "for info in pkgutil.walk_packages(core.__path__, 'napari_active_sam.core.'):\n"
        "    importlib.import_module(info.name)\n"
        "import napari_active_sam.cli, napari_active_sam.io\n"
        "import sys\n"
        "assert 'laplace' not in sys.modules  # imported when a head is fitted, not before\n"
        "from napari_active_sam.core.active.head_training import laplace_class\n"
        "laplace_class()\n"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_check_itself_detects_a_gui_import():
    code = f"import qtpy; import sys; print([m for m in {GUI_MODULES!r} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "qtpy" in result.stdout


def test_the_command_line_parses_without_loading_torch():
    """``napari-active-sam --help`` answers at once: torch loads only when a command runs."""
    code = (
        "import sys\n"
        "from napari_active_sam.cli import build_parser\n"
        "build_parser()\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
