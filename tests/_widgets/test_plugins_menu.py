"""A fresh viewer as a new user meets it: the image opened with the plugin's reader, the
dock opened from the Plugins menu, a left click inside an object and a right click outside,
all real Qt events, in a process of its own (nothing imported before the canvas exists),
which closes the viewer and ends while work may still be running."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import tifffile

from napari_active_sam.core.data.scenes import make_scene

SESSION = r'''
import json, sys, time
import numpy as np
import napari
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

def wait(condition, seconds):
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        QApplication.processEvents()
        time.sleep(0.02)
    return True

def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera

def click(viewer, row, col, button):
    canvas = viewer.window._qt_viewer.canvas.native
    centre_row, centre_col = _camera(viewer).center[-2:]
    zoom = _camera(viewer).zoom
    where = QPoint(round((col - centre_col) * zoom + canvas.width() / 2),
                   round((row - centre_row) * zoom + canvas.height() / 2))
    QTest.mouseMove(canvas, where)
    QTest.mousePress(canvas, button, Qt.KeyboardModifier.NoModifier, where)
    QTest.mouseRelease(canvas, button, Qt.KeyboardModifier.NoModifier, where)

path, inside, outside = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
viewer = napari.Viewer(show=True)
viewer.open(path, plugin="napari-active-sam")
QApplication.processEvents()
plugins = next(a.menu() for a in viewer.window._qt_window.menuBar().actions()
               if "Plugins" in a.text())
ours = next(a.menu() for a in plugins.actions() if a.text() == "Active SAM")
next(a for a in ours.actions() if a.text() == "Active SAM").trigger()
ready = wait(lambda: "SAM prompts" in viewer.layers, 120)
viewer.reset_view()
wait(lambda: False, 0.2)
click(viewer, *inside, Qt.MouseButton.LeftButton)
clicked = wait(lambda: len(viewer.layers["SAM prompts"].data) == 1, 10)
preview = viewer.layers["SAM preview"]
shown = wait(lambda: preview.data.any(), 120)
wait(lambda: False, 0.5)  # let the canvas draw the mask
# What reaches the screen: the canvas with the mask drawn against the canvas without it.
with_mask = viewer.screenshot(canvas_only=True, flash=False)
preview.visible = False
without_mask = viewer.screenshot(canvas_only=True, flash=False)
preview.visible = True
click(viewer, *outside, Qt.MouseButton.RightButton)
wait(lambda: len(viewer.layers["SAM prompts"].data) == 2, 10)
points = viewer.layers["SAM prompts"]
print(json.dumps({
    "ready": ready, "clicked": clicked, "mask_shown": bool(shown),
    "polarity": [bool(p) for p in points.features["positive"]],
    "mask_pixels": int((preview.data > 0).sum()),
    "preview_visible": bool(preview.visible and preview.opacity > 0),
    "screen_pixels": int(np.any(with_mask != without_mask, axis=-1).sum()),
}))
viewer.close()  # the right click's decode may still run: closing must not abort Python
'''


def test_dock_from_the_plugins_menu_takes_real_clicks(tmp_path):
    scene = make_scene("ultrasound", np.random.default_rng(8), 256)
    path = tmp_path / "ultrasound.tif"
    tifffile.imwrite(path, scene.image)
    rows, cols = np.nonzero(scene.labels == 1)
    inside = [float(np.median(rows)), float(np.median(cols))]
    outside = [float(v) + 5 for v in np.argwhere(scene.labels == 0)[0]]
    result = subprocess.run(
        [sys.executable, "-c", SESSION, str(path), json.dumps(inside), json.dumps(outside)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]  # a crash is a negative code
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["ready"] and found["clicked"] and found["mask_shown"], found
    assert found["polarity"] == [True, False]
    assert found["mask_pixels"] > 0 and found["preview_visible"]
    # The outline changes on screen at least as many pixels as a ring of 100 px would.
    assert found["screen_pixels"] > 100, found
