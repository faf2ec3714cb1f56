"""``napari-active-sam demo``: napari with the sample CT volume, the demo model and the dock
widget, ready to click; with a screenshot path it clicks once, renders and exits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SCREENSHOT_TIMEOUT_S = 600


def run_demo(
    model: str = "demo",
    device: str | None = None,
    screenshot: Path | None = None,
    checkpoint: Path | None = None,
):
    """Open the demo. With ``screenshot``, click the liver, wait for the mask, the
    uncertainty map and the suggested clicks, save a PNG of the window and quit (works
    under Xvfb)."""
    import napari
    from qtpy.QtCore import QTimer

    from .._sample_data import ct_volume
    from .dock import ActiveSamWidget
    from .layers import PREVIEW
    from .models import LOCAL_FILE

    (volume, image_meta, _), (organs, labels_meta, _) = ct_volume()
    viewer = napari.Viewer(title="napari-active-sam demo")
    viewer.add_image(volume, **image_meta)
    viewer.add_labels(organs, **{**labels_meta, "visible": False})  # the answer key
    widget = ActiveSamWidget(viewer)
    widget.window.value = "soft_tissue"
    if checkpoint is not None:
        widget.model_name.value = LOCAL_FILE
        widget.checkpoint.value = checkpoint
    else:
        widget.model_name.value = model
    if device:
        widget.device.value = device
    viewer.window.add_dock_widget(widget, name="Active SAM", area="right")
    viewer.window.set_geometry(0, 0, 1400, 860)
    liver_slice = int(np.argmax((organs == 1).sum(axis=(1, 2))))
    viewer.dims.current_step = (liver_slice, 0, 0)
    widget.image.value = viewer.layers[image_meta["name"]]
    if screenshot is None:
        napari.run()
        return
    state = {"clicked": False, "waited": 0.0}
    timer = QTimer()

    def step():
        state["waited"] += 0.2
        session = widget.session
        if state["waited"] > SCREENSHOT_TIMEOUT_S:
            timer.stop()
            viewer.close()
            raise TimeoutError("The demo did not finish in time.")
        if session is None or not session.is_encoded((liver_slice,)):
            return
        if not state["clicked"]:
            rows, cols = np.nonzero(organs[liver_slice] == 1)
            widget.add_click(float(np.median(rows)), float(np.median(cols)))
            state["clicked"] = True
            return
        suggested = bool(widget.suggestions) or widget.acquisition.value == "off"
        if viewer.layers[PREVIEW].data[liver_slice].any() and suggested:
            timer.stop()
            widget.cancel_encoding()
            try:
                viewer.window.screenshot(str(screenshot), canvas_only=False)
            finally:  # a screenshot that cannot be saved does not leave the window open
                viewer.close()

    timer.timeout.connect(step)
    timer.start(200)
    napari.run()
