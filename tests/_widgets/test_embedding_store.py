"""The dock reads the embeddings ``precompute`` stored, in a real viewer."""

from __future__ import annotations

import numpy as np
import tifffile
import zarr
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from napari_active_sam._widgets.dock import ActiveSamWidget
from napari_active_sam._widgets.models import LOCAL_FILE
from napari_active_sam.cli import main
from napari_active_sam.core.data.files import read_image
from napari_active_sam.core.engine.store import EmbeddingStore

WAIT = 120_000  # ms: a volume encoded on a 2-core CPU


def _writes(store) -> dict[str, str]:
    """Each stored slice's write id: a slice encoded again gets a new one."""
    group = zarr.open_group(store, mode="r")
    return {name: dict(array.attrs)["write"] for name, array in group.arrays()}


def _dock(viewer, qtbot, checkpoint) -> ActiveSamWidget:
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_name.value = LOCAL_FILE
    widget.checkpoint.value = checkpoint
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    return widget


def test_the_dock_reads_what_precompute_stored_and_adds_to_it(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path
):
    image = tmp_path / "stack.tif"
    stack = np.random.default_rng(0).random((4, 48, 48)).astype(np.float32)
    tifffile.imwrite(image, stack, photometric="minisblack")
    store = tmp_path / "stack.zarr"
    assert main(["precompute", str(image), "--model", "tiny", "--checkpoint",
                 str(tiny_checkpoint), "--out", str(store), "--workers", "1"]) == 0  # fmt: skip
    stored = _writes(store)
    assert len(stored) == 4

    viewer = make_napari_viewer()
    viewer.add_image(read_image(image).data, name="stack")  # as the plugin's reader reads it
    widget = _dock(viewer, qtbot, tiny_checkpoint)
    assert widget.session.store.path is None  # no store chosen: embeddings in memory
    widget.store.value = store
    qtbot.waitUntil(lambda: widget.session.store.path == store, timeout=WAIT)
    QTest.mouseClick(widget.encode_volume.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: all(widget.session.is_encoded((z,)) for z in range(4)),
                    timeout=WAIT)  # fmt: skip
    assert _writes(store) == stored  # every slice read from the store, none encoded again

    # A new folder: what the dock encodes is written there, for the next session to read.
    fresh = tmp_path / "fresh.zarr"
    widget.store.value = fresh
    qtbot.waitUntil(lambda: widget.session.store.path == fresh, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded(widget.current_index()), timeout=WAIT)
    qtbot.waitUntil(lambda: len(_writes(fresh)) == 1, timeout=WAIT)


def test_a_store_of_another_model_is_refused_in_the_status(
    make_napari_viewer, qtbot, tiny_checkpoint, tmp_path
):
    store = tmp_path / "other.zarr"
    EmbeddingStore("another-model", path=store)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((48, 48), np.float32), name="img")
    widget = _dock(viewer, qtbot, tiny_checkpoint)
    first = widget.session
    widget.store.value = store
    qtbot.waitUntil(lambda: "holds embeddings of model another-model" in widget.status.value,
                    timeout=WAIT)  # fmt: skip
    assert widget.session is first  # the session in use stays
