"""How precise the real evaluation set's labels are: each labelling rule against itself
with its threshold moved a little.

Every label of the real evaluation set (``napari-active-sam make-real-dataset``) comes from
a fixed rule with a threshold someone chose: hematoxylin above 0.02 for the IHC nuclei,
markers at 30 and 150 grey levels for the coins, the volume's Otsu threshold for the EPI
brain, 1.1 times the brain's median for its CSF (moved here by a share of its contrast, the
0.1 above the median), Hounsfield units for the CT structures.
A threshold a little higher or lower would be as defensible, so how far the objects move
with it bounds what agreement with the labels can mean: a nucleus whose outline moves by
IoU 0.15 when its threshold moves by a tenth cannot be outlined to IoU 0.85 of one of
them except by chance. For each rule and each threshold moved down and up (by
``--relative`` of it, or ``--hu`` Hounsfield units for CT), every object of the labels at
the chosen threshold is matched to the object it overlaps most in the moved labels
(IoU 0 where none), in 2D for the images of both splits and in 3D for the EPI volume's
two objects. Prints one JSON object: per subset and moved threshold, the objects'
median and mean IoU and the share of them at or above each of ``--levels``.

    python benchmarks/label_stability.py
    python benchmarks/label_stability.py --relative 0.05 --hu 25
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np

from napari_active_sam.core.data import real


def matched_ious(labels: np.ndarray, moved: np.ndarray) -> list[float]:
    """IoU of every object of ``labels`` with the object of ``moved`` it overlaps most."""
    ious = []
    for value in np.unique(labels[labels > 0]):
        mask = labels == value
        hits = np.bincount(moved[mask], minlength=int(moved.max()) + 1)
        hits[0] = 0
        if not hits.any():
            ious.append(0.0)
            continue
        other = moved == int(hits.argmax())
        ious.append(float((mask & other).sum() / (mask | other).sum()))
    return ious


def summary(ious: list[float], levels: list[float]) -> dict:
    values = np.asarray(ious, float)
    return {
        "objects": int(values.size),
        "median_iou": round(float(np.median(values)), 3),
        "mean_iou": round(float(values.mean()), 3),
        **{f"share_iou_{level:g}": round(float((values >= level).mean()), 3)
           for level in levels},  # fmt: skip
    }


def rules(relative: float, hu: float) -> dict[str, tuple[Callable, dict]]:
    """Per subset: a function of the rule's parameters (the chosen ones by default) that
    returns its label layers, and per direction the moved parameters."""
    coins, _ = real.skimage_picture("coins.png")
    ihc, _ = real.skimage_picture("ihc.png")
    volume = real.epi_volume()
    chest, _ = real.read_hounsfield("CT_small.dcm")
    head, _ = real.read_hounsfield("693_J2KI.dcm")
    down, up = 1 - relative, 1 + relative

    def epi(scale: float = 1.0, factor: float = real.CSF_FACTOR) -> list[np.ndarray]:
        brains = real.brain_masks(volume, scale)
        labels = brains.astype(np.int32)
        labels[real.ventricular_csf(volume, brains, factor)] = 2
        return [labels]

    def ct_head(body_hu: float = real.BODY_HU, bone_hu: float = real.BONE_HU) -> list:
        layers = real.ct_head_layers(head, body_hu, bone_hu)
        return [layers["body"][0], layers["skull"][0]]  # the head; skull and brain space

    return {
        "photo-coins": (lambda **p: [real.coin_labels(coins, **p)],
                        {"down": {"background": real.COIN_BACKGROUND * down,
                                  "coin": real.COIN_LEVEL * down},
                         "up": {"background": real.COIN_BACKGROUND * up,
                                "coin": real.COIN_LEVEL * up}}),
        "nuclei-ihc": (lambda **p: [real.ihc_nuclei_labels(ihc, **p)],
                       {"down": {"hematoxylin_min": real.HEMATOXYLIN_MIN * down},
                        "up": {"hematoxylin_min": real.HEMATOXYLIN_MIN * up}}),
        "mri-epi (3D)": (epi,
                         {"down": {"scale": down, "factor": 1 + (real.CSF_FACTOR - 1) * down},
                          "up": {"scale": up, "factor": 1 + (real.CSF_FACTOR - 1) * up}}),
        "ct-chest": (lambda **p: [real.ct_chest_labels(chest, **p)[0]],
                     {"down": {"lung_hu": real.LUNG_HU - hu,
                               "vertebra_hu": real.VERTEBRA_HU - hu},
                      "up": {"lung_hu": real.LUNG_HU + hu,
                             "vertebra_hu": real.VERTEBRA_HU + hu}}),
        "ct-head": (ct_head,
                    {"down": {"body_hu": real.BODY_HU - hu, "bone_hu": real.BONE_HU - hu},
                     "up": {"body_hu": real.BODY_HU + hu, "bone_hu": real.BONE_HU + hu}}),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relative", type=float, default=0.1,
                        help="share a relative threshold is moved by (default 0.1)")
    parser.add_argument("--hu", type=float, default=50.0,
                        help="Hounsfield units a CT threshold is moved by (default 50)")
    parser.add_argument("--levels", default="0.8,0.85,0.9",
                        help="IoU levels to count objects at (default 0.8,0.85,0.9)")
    args = parser.parse_args()  # fmt: skip
    levels = [float(v) for v in args.levels.split(",")]
    report = {"relative": args.relative, "hu": args.hu, "subsets": {}}
    for subset, (label, moves) in rules(args.relative, args.hu).items():
        labels = label()
        found = {}
        for direction, moved in moves.items():
            ious = [iou for layer, other in zip(labels, label(**moved), strict=True)
                    for iou in matched_ious(layer, other)]  # fmt: skip
            found[direction] = {"moved": {k: round(v, 4) for k, v in moved.items()},
                                "ious": [round(v, 3) for v in ious] if len(ious) < 5 else None,
                                **summary(ious, levels)}  # fmt: skip
        report["subsets"][subset] = found
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
