"""The model chooser every dock offers: a registry name, or a local checkpoint file.

A local checkpoint shows two more controls, the file and its architecture (a checkpoint
written by this project names its own architecture).
"""

from __future__ import annotations

import os
from pathlib import Path

from magicgui.widgets import ComboBox, FileEdit

from ..core.engine.architectures import NAMED_ARCHITECTURES
from ..core.engine.device import DEVICE_ENV
from ..core.engine.registry import model_names

LOCAL_FILE = "local file"
FROM_FILE = "from the file"


def model_choosers() -> tuple[ComboBox, FileEdit, ComboBox]:
    """Model, local checkpoint and architecture choosers (the last two shown only for a
    local file)."""
    name = ComboBox(label="model", choices=[*model_names(), LOCAL_FILE], value="demo")
    checkpoint = FileEdit(label="checkpoint", mode="r", visible=False)
    architecture = ComboBox(label="architecture", choices=[FROM_FILE, *NAMED_ARCHITECTURES],
                            visible=False)  # fmt: skip

    def show_local() -> None:
        checkpoint.visible = architecture.visible = name.value == LOCAL_FILE

    name.changed.connect(show_local)
    return name, checkpoint, architecture


DEVICES = ("auto", "cpu", "cuda", "mps")


def device_chooser() -> ComboBox:
    """The device a model is loaded on: ``$NAPARI_ACTIVE_SAM_DEVICE`` when set (a device
    such as ``cuda:1`` joins the choices), else ``auto``; loading checks it."""
    wanted = os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"
    choices = [*DEVICES, *([] if wanted in DEVICES else [wanted])]
    return ComboBox(label="device", choices=choices, value=wanted)


def chosen_model(
    name: ComboBox, checkpoint: FileEdit, architecture: ComboBox
) -> tuple[str, Path | None]:
    """``(name, checkpoint or None)`` for
    :func:`~napari_active_sam.core.engine.checkpoints.load_model`, from the controls of
    :func:`model_choosers`."""
    if name.value != LOCAL_FILE:
        return name.value, None
    arch = architecture.value
    return (LOCAL_FILE if arch == FROM_FILE else arch), checkpoint.value


def checkpoint_missing(name: ComboBox, checkpoint: FileEdit) -> bool:
    """Whether a local file is chosen but no existing file is named yet."""
    return name.value == LOCAL_FILE and not Path(checkpoint.value).is_file()
