"""Benchmark how responsive napari stays: GUI-thread blocking and click-to-preview latency.

Prints one JSON object:

``gui_blocked``
    The longest gap between ticks of a 10 ms QTimer heartbeat on the GUI thread while the
    widget encodes a 50-slice volume in its worker (goal: under 100 ms), side by side with
    the gap when one slice is encoded on the GUI thread itself, as a plugin without workers
    does.
``click_to_preview``
    Seconds from adding a click to the preview layer showing the mask (median of several
    clicks), the encoder already done.

Run under a display or Xvfb::

    xvfb-run -a python benchmarks/bench_gui.py
    xvfb-run -a python benchmarks/bench_gui.py --model tiny --checkpoint tiny.pt --slices 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_active_sam.cli import options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--clicks", type=int, default=7)
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_active_sam._widgets.dock import ActiveSamWidget
    from napari_active_sam._widgets.layers import PREVIEW
    from napari_active_sam._widgets.models import LOCAL_FILE
    from napari_active_sam.core.data.scenes import make_ct_volume
    from napari_active_sam.core.engine.embeddings import SliceEncoder
    from napari_active_sam.core.engine.preprocess import to_sam_rgb
    from napari_active_sam.core.engine.store import EmbeddingStore

    volume, organs, _ = make_ct_volume(np.random.default_rng(0), slices=args.slices)
    viewer = napari.Viewer(show=True)
    viewer.add_image(volume, name="ct")
    widget = ActiveSamWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.window.value = "soft_tissue"
    if args.checkpoint:
        widget.model_name.value = LOCAL_FILE
        widget.checkpoint.value = args.checkpoint
    app = QApplication.instance()

    ticks: list[float] = []
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    heartbeat.start(10)

    def wait_until(condition, timeout=1800.0):
        start = time.perf_counter()
        while not condition():
            app.processEvents()
            time.sleep(0.002)
            if time.perf_counter() - start > timeout:
                raise TimeoutError("benchmark step did not finish")

    def all_encoded() -> bool:
        return all(widget.session.is_encoded((z,)) for z in range(args.slices))

    wait_until(lambda: widget.session is not None)
    wait_until(all_encoded)  # the widget's own first pass; now time a full pass afresh
    widget.session.store = EmbeddingStore(widget.session.model.encoder_id)
    finished = []
    ticks.clear()
    started = time.perf_counter()
    worker = widget.encode_all()
    # Wait on the worker's own signal: polling the store here would load the GUI thread.
    worker.finished.connect(lambda: finished.append(time.perf_counter()))
    wait_until(lambda: finished)
    encode_s = finished[0] - started
    assert all_encoded()
    gaps = np.diff([started, *ticks])
    worker_gap = float(gaps.max()) if len(gaps) else float("nan")

    # Baseline: the same encoder called on the GUI thread, as plugins without workers do.
    session = widget.session
    rgb = to_sam_rgb(session.source.raw_slice((0,)), session.limits)
    ticks.clear()
    app.processEvents()
    before = time.perf_counter()
    SliceEncoder(session.model).encode([rgb], ["baseline"])
    wait_until(lambda: ticks and ticks[-1] > before)
    baseline_gap = float(max(np.diff([before, *ticks])))

    latencies = []
    middle = args.slices // 2
    viewer.dims.current_step = (middle, 0, 0)
    rows, cols = np.nonzero(organs[middle] == 1)
    preview = viewer.layers[PREVIEW]
    for i in range(args.clicks):
        widget.clear_prompts()
        wait_until(lambda: not preview.data[middle].any())
        row, col = rows[i * len(rows) // args.clicks], cols[i * len(cols) // args.clicks]
        start = time.perf_counter()
        widget.add_click(float(row), float(col))
        wait_until(lambda: preview.data[middle].any())
        latencies.append(time.perf_counter() - start)
    heartbeat.stop()
    viewer.close()

    report = {
        "model": session.model.model_id,
        "device": str(session.model.device),
        "slices": args.slices,
        "gui_blocked": {
            "longest_gap_while_worker_encodes_s": round(worker_gap, 4),
            "longest_gap_encoding_on_gui_thread_s": round(baseline_gap, 4),
            "heartbeat_interval_s": 0.01,
            "volume_encode_s": round(encode_s, 2),
            "goal_s": 0.1,
        },
        "click_to_preview": {
            "median_s": round(float(np.median(latencies)), 4),
            "max_s": round(float(np.max(latencies)), 4),
            "clicks": len(latencies),
        },
    }
    report["goals_met"] = {"gui_blocked": worker_gap < 0.1}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
