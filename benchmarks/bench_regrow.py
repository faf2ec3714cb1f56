"""Benchmark committing a propagated object: GUI-thread seconds and undo-history size.

A correction regrows an object through the volume and replaces it in the labels layer on
the GUI thread. ``CommittedObjects.replace`` writes only the voxels that change; the
baseline clears the whole object and writes the whole grown one, as two edits in one undo
step. The volume is 300 × 512 × 512 with an object of about 3 million voxels (a disc on 200
slices) regrown two pixels off and on 20 more slices. Prints one JSON object: per way, the
median seconds of ``--runs`` runs and the voxels the undo step holds; and their ratios.

A first commit writes a new object: ``CommittedObjects.write`` looks for free voxels only
in the box around the object; the baseline looks through the whole volume. Measured for a
small object (20 slices of a 40 × 40 square, 32,000 voxels) in the same volume, under
``"first_commit"``.

    python benchmarks/bench_regrow.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _scene(depth: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:side, :side]
    centre = side // 2
    disc = (rows - centre) ** 2 + (cols - centre) ** 2 < 70**2
    moved = (rows - centre - 2) ** 2 + (cols - centre) ** 2 < 71**2
    labels = np.zeros((depth, side, side), np.int32)
    labels[depth // 6 : depth * 5 // 6][:, disc] = 1
    grown = np.zeros(labels.shape, bool)
    grown[depth // 6 - 10 : depth * 5 // 6 + 10][:, moved] = True
    return labels, grown


def _history_voxels(layer) -> int:
    """Voxels the last undo step of a napari Labels layer keeps."""
    item = layer._undo_history[-1]  # what Ctrl+Z restores: (indices, old values, new) atoms
    return int(sum(len(atom[1]) if isinstance(atom, tuple) else atom.mask.sum()
                   for atom in item))  # fmt: skip


def _first_commit(depth: int, side: int, runs: int) -> dict:
    """Median seconds of writing a small new object into an empty volume: in its box
    (``CommittedObjects.write``) and through the whole volume (baseline)."""
    from napari.components import ViewerModel

    from napari_active_sam._widgets.layers import OUTPUT
    from napari_active_sam._widgets.objects import CommittedObjects
    from napari_active_sam.core.annotate.session import commit_pixels

    labels = np.zeros((depth, side, side), np.int32)
    mask = np.zeros(labels.shape, bool)
    mask[depth // 2 - 10 : depth // 2 + 10, side // 2 - 20 : side // 2 + 20,
         side // 2 - 20 : side // 2 + 20] = True  # fmt: skip

    def in_box(viewer, layer) -> None:
        CommittedObjects(viewer, None, None, None, None).write(mask)

    def whole(viewer, layer) -> None:
        layer.data_setitem(commit_pixels(np.asarray(layer.data), mask), 1)

    found = {}
    for name, way in (("write", in_box), ("baseline_whole_volume", whole)):
        seconds = []
        for _ in range(runs):
            viewer = ViewerModel()
            layer = viewer.add_labels(labels.copy(), name=OUTPUT)
            start = time.perf_counter()
            way(viewer, layer)
            seconds.append(time.perf_counter() - start)
            assert np.array_equal(np.asarray(layer.data) == 1, mask)
        found[name] = {"seconds": round(float(np.median(seconds)), 4)}
    found["ratio_seconds"] = round(found["write"]["seconds"]
                                   / found["baseline_whole_volume"]["seconds"], 3)  # fmt: skip
    found["object_voxels"] = int(mask.sum())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--depth", type=int, default=300)
    parser.add_argument("--side", type=int, default=512)
    args = parser.parse_args()

    from napari.components import ViewerModel

    from napari_active_sam._widgets.layers import OUTPUT
    from napari_active_sam._widgets.objects import CommittedObjects

    labels, grown = _scene(args.depth, args.side)

    def changed_only(objects, layer) -> None:
        objects.replace(1, grown)

    def whole(objects, layer) -> None:
        with layer.block_history():
            layer.data_setitem(np.nonzero(np.asarray(layer.data) == 1), 0)
            layer.data_setitem(np.nonzero(grown & (np.asarray(layer.data) == 0)), 1)

    results = {}
    for name, way in (("replace", changed_only), ("baseline_clear_and_write", whole)):
        seconds, voxels = [], 0
        for _ in range(args.runs):
            viewer = ViewerModel()
            layer = viewer.add_labels(labels.copy(), name=OUTPUT)
            objects = CommittedObjects(viewer, None, None, None, None)
            start = time.perf_counter()
            way(objects, layer)
            seconds.append(time.perf_counter() - start)
            assert np.array_equal(np.asarray(layer.data) == 1, grown)
            voxels = _history_voxels(layer)
        results[name] = {"seconds": round(float(np.median(seconds)), 3), "undo_voxels": voxels}
    base, new = results["baseline_clear_and_write"], results["replace"]
    results["ratio_seconds"] = round(new["seconds"] / base["seconds"], 3)
    results["ratio_undo_voxels"] = round(new["undo_voxels"] / base["undo_voxels"], 4)
    results["volume"] = [args.depth, args.side, args.side]
    results["object_voxels"] = int(grown.sum())
    results["first_commit"] = _first_commit(args.depth, args.side, args.runs)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
