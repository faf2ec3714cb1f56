"""The dock's embedding store in a real viewer: what ``precompute`` stored is read, what the
dock encodes is kept, and a store is taken only once its path is typed in full."""

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
    """Each stored slice's write id (a slice encoded again gets a new one); entries being
    written, whose record comes last, are left out."""
    group = zarr.open_group(store, mode="r")
    return {name: dict(array.attrs)["write"] for name, array in group.arrays()
            if "write" in array.attrs}  # fmt: skip


def _dock(viewer, qtbot, checkpoint) -> ActiveSamWidget:
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_name.value = LOCAL_FILE
    widget.checkpoint.value = checkpoint
    qtbot.waitUntil(lambda: widget.session is not None, timeout=WAIT)
    qtbot.waitUntil(lambda: widget.session.is_encoded(widget.current_index()), timeout=WAIT)
    return widget


def _type_store(widget, path) -> None:
    """Type ``path`` into the embedding store field, key by key, and press Return."""
    field = widget.store.line_edit.native
    field.setFocus()
    field.selectAll()
    QTest.keyClick(field, Qt.Key.Key_Delete)
    QTest.keyClicks(field, str(path))
    QTest.keyClick(field, Qt.Key.Key_Return)


def test_the_dock_keeps_its_embeddings_in_a_store_and_reads_what_precompute_stored(
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
    session = widget.session
    assert session.store.path is None  # no store chosen: embeddings in memory
    qtbot.waitUntil(lambda: all(session.is_encoded((z,)) for z in range(4)), timeout=WAIT)
    qtbot.waitUntil(lambda: not widget.cancel.enabled, timeout=WAIT)

    # A new folder: what the session holds is written there, and the session goes on.
    fresh = tmp_path / "fresh.zarr"
    _type_store(widget, fresh)
    qtbot.waitUntil(lambda: "embeddings are kept in" in widget.status.value, timeout=WAIT)
    assert f"kept in {fresh} (4 written there now)" in widget.status.value
    assert widget.session is session and session.store.path == fresh
    assert len(_writes(fresh)) == 4

    # The store precompute wrote: it holds these slices already, so none is written again.
    widget.status.value = ""
    _type_store(widget, store)
    qtbot.waitUntil(lambda: "embeddings are kept in" in widget.status.value, timeout=WAIT)
    assert f"kept in {store} (0 written there now)" in widget.status.value
    assert widget.session is session and _writes(store) == stored
    # Taken when typed in full, not per keystroke: no store was made for a part of a path.
    assert {path.name for path in tmp_path.iterdir()} == {"stack.tif", "stack.zarr",
                                                          "fresh.zarr", "tiny.pt"}  # fmt: skip

    # The next session on the image reads every slice from the store: none encoded again.
    widget.start_session()
    qtbot.waitUntil(lambda: widget.session is not session, timeout=WAIT)
    session = widget.session
    assert session.store.path == store
    QTest.mouseClick(widget.encode_volume.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: all(session.is_encoded((z,)) for z in range(4)), timeout=WAIT)
    qtbot.waitUntil(lambda: not widget.cancel.enabled, timeout=WAIT)
    assert _writes(store) == stored

    # Another image: the store, which holds this one's slices, is let go.
    viewer.add_image(stack[:, ::-1].copy(), name="flipped")
    widget.image.value = viewer.layers["flipped"]
    assert "embedding store cleared" in widget.status.value
    assert str(widget.store.value) in ("", ".")
    qtbot.waitUntil(lambda: widget.session is not session, timeout=WAIT)
    assert widget.session.store.path is None


def test_a_store_of_another_model_is_refused_in_the_status(make_napari_viewer, qtbot,
                                                           tiny_checkpoint, tmp_path):  # fmt: skip
    store = tmp_path / "other.zarr"
    EmbeddingStore("another-model", path=store)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((48, 48), np.float32), name="img")
    widget = _dock(viewer, qtbot, tiny_checkpoint)
    session = widget.session
    _type_store(widget, store)
    qtbot.waitUntil(lambda: "holds embeddings of model another-model" in widget.status.value,
                    timeout=WAIT)  # fmt: skip
    assert widget.session is session and session.store.path is None  # as it was
