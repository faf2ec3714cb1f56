"""The 3D interactive protocol on the sample CT's organs and on a real MRI volume.

Writes both as NIfTI files with their spacing (the sample CT: 2.5 × 0.8 × 0.8 mm, soft-tissue
window; nibabel's EPI volume: 2.2 × 2 × 2 mm, brain and ventricles) into a labelled
folder each, runs ``napari-active-sam benchmark --protocol 3d`` on them (a box and five
corrections per object by default) and prints one JSON object with each run's summary.

Examples
--------
The demo model, RITM and EIG corrections (a few minutes on two CPU cores)::

    python benchmarks/eval_volumes.py --strategies ritm,eig > volumes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel
import numpy as np
import tifffile

from napari_active_sam.cli.main import main as cli
from napari_active_sam.core.data.real import mri_epi_volume
from napari_active_sam.core.engine.downloads import bundled_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="3D protocol on the sample CT and real MRI.")
    parser.add_argument("--model", default="demo",
                        help="registered model, or the architecture of --checkpoint")
    parser.add_argument("--checkpoint", type=Path,
                        help="local checkpoint (its head and regressor beside it)")
    parser.add_argument("--strategies", default="ritm")
    parser.add_argument("--clicks", type=int, default=5, help="corrections after the box")
    parser.add_argument("--first", default="box", choices=["box", "click"])
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--no-insist", dest="insist", action="store_false",
                        help="keep answers that leave corrections out (default: asked again)")
    return parser.parse_args(argv)


def write_volume(folder: Path, volume: np.ndarray, labels: np.ndarray, spacing) -> Path:
    """``folder/images/NAME.nii.gz`` and ``folder/masks/NAME.nii.gz`` with ``spacing``
    ``(z, y, x)`` in mm."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    for kind, array in (("images", volume), ("masks", labels.astype(np.int16))):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        image = nibabel.Nifti1Image(np.transpose(array, (2, 1, 0)), affine)
        nibabel.save(image, folder / kind / "volume.nii.gz")
    return folder


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="eval-volumes-"))
    ct_spacing = json.loads(bundled_path("samples.json").read_text())["ct_volume"]["spacing"]
    datasets = {
        "sample_ct": (
            write_volume(root / "sample_ct", tifffile.imread(bundled_path("ct_volume.tif")),
                         tifffile.imread(bundled_path("ct_volume_labels.tif")), ct_spacing),
            "soft_tissue",
        ),  # fmt: skip
        "mri_epi": (write_volume(root / "mri_epi", *mri_epi_volume()), "percentile"),
    }
    results = {}
    for name, (data, window) in datasets.items():
        out = root / f"{name}-out"
        code = cli([
            "benchmark", "--data", str(data), "--model", args.model, "--protocol", "3d",
            "--strategies", args.strategies, "--clicks", str(args.clicks), "--first",
            args.first, "--window", window, "--out", str(out), "--workers", "1",
            *([] if args.insist else ["--no-insist"]),
            *(["--checkpoint", str(args.checkpoint)] if args.checkpoint else []),
        ])  # fmt: skip
        if code != 0:
            return code
        summary = json.loads((out / "summary.json").read_text())
        records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
        results[name] = {
            "strategies": summary["strategies"],
            "objects": [
                {"label": r["label"], "strategy": r["strategy"], "dsc": r["dsc"],
                 "final_nsd": r["final_nsd"]}
                for r in records
            ],  # fmt: skip
        }
    json.dump({"model": args.model, "checkpoint": str(args.checkpoint or ""),
               "first": args.first, "corrections": args.clicks, "insist": args.insist,
               "results": results}, sys.stdout, indent=1)  # fmt: skip
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
