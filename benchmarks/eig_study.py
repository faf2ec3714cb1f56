"""EIG-guided Dice against Oracle Dice, per click, for each available model.

"Oracle Dice" scores the best of SAM's three multimask outputs *chosen with the ground
truth*; "EIG-guided Dice" scores the mask the model itself ranks first, after clicks placed
where the expected information gain over its heads peaks (answered with the true label).
High oracle numbers only mean something for users if the two agree.

The study includes a case built to show the failure: the demo model with its IoU head
reversed (its last layer negated, a real segment-anything checkpoint). Its three heads are
untouched, so its Oracle Dice is exactly the demo model's, but it now shows its worst mask:
an evaluation that reports Oracle Dice alone cannot tell the two models apart.

    python benchmarks/eig_study.py --out eig-study --images 40

Writes OUT/eig_study.json, OUT/eig_study.png, OUT/eig_study.md and one benchmark folder per
model; prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from napari_active_sam.cli import main as cli
from napari_active_sam.core.data.scenes import write_dataset
from napari_active_sam.core.engine.checkpoints import load_model, save_checkpoint


def misranking_copy(path: Path) -> Path:
    """The demo model with its IoU head's last layer negated, saved to ``path``."""
    model = load_model("demo", device="cpu")
    last = model.sam.mask_decoder.iou_prediction_head.layers[-1]
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    save_checkpoint(path, model.sam, model.architecture, derived_from=model.model_id)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    out = args.out
    data = out / "data"
    if not (data / "objects.json").is_file():
        list(write_dataset(data, args.images, seed=args.seed, kind="mixed", size=256))
    models = {
        "demo": ["--model", "demo"],
        "demo, IoU head reversed": [
            "--model", "demo", "--checkpoint", str(misranking_copy(out / "demo_misranked.pt"))
        ],
    }  # fmt: skip
    results = {}
    for name, model_args in models.items():
        folder = out / name.split(",")[0].replace(" ", "_")
        if "reversed" in name:
            folder = out / "demo_misranked"
        code = cli(["benchmark", "--data", str(data), *model_args, "--strategies",
                    "eig,oracle,ritm", "--clicks", str(args.clicks), "--out", str(folder),
                    "--workers", str(args.workers)])  # fmt: skip
        if code:
            sys.exit(code)
        summary = json.loads((folder / "summary.json").read_text())["strategies"]
        results[name] = {
            "eig_guided_dice": summary["eig"]["dice"],
            "oracle_dice_with_eig_clicks": summary["eig"]["oracle_dice"],
            "ritm_dice": summary["ritm"]["dice"],
            "oracle_strategy_oracle_dice": summary["oracle"]["oracle_dice"],
            "mean_gap": round(
                float(np.mean(np.subtract(summary["eig"]["oracle_dice"], summary["eig"]["dice"]))),
                4,
            ),
            "objects": summary["eig"]["objects"],
        }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, r), colour in zip(results.items(), ("tab:blue", "tab:red"), strict=False):
        x = range(1, len(r["eig_guided_dice"]) + 1)
        ax.plot(x, r["eig_guided_dice"], color=colour, marker="o", label=f"{name}: EIG-guided")
        ax.plot(x, r["oracle_dice_with_eig_clicks"], color=colour, ls="--",
                label=f"{name}: Oracle")  # fmt: skip
    ax.set(xlabel="click", ylabel="mean Dice", ylim=(0, 1), title="EIG-guided vs Oracle Dice")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out / "eig_study.png", dpi=110, bbox_inches="tight")

    lines = ["# EIG-guided Dice against Oracle Dice", "",
             f"{results['demo']['objects']} objects from {args.images} generated images "
             f"(seed {args.seed}), {args.clicks} clicks; first click = RITM click, then the "
             "argmax of EIG over the three multimask heads, answered with the true label.", "",
             "| model | click 1 EIG-guided / Oracle | last click EIG-guided / Oracle "
             "| mean gap |", "|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        e, o = r["eig_guided_dice"], r["oracle_dice_with_eig_clicks"]
        lines.append(f"| {name} | {e[0]:.3f} / {o[0]:.3f} | {e[-1]:.3f} / {o[-1]:.3f} "
                     f"| {r['mean_gap']:.3f} |")  # fmt: skip
    lines += ["", "![EIG vs Oracle](eig_study.png)", "",
              "The reversed model keeps every head of the demo model, so the best of its three "
              "outputs (what Oracle Dice reports) is as good as before; but it ranks its own "
              "outputs backwards, so the mask a user sees is its worst. Oracle Dice cannot "
              "see the difference; EIG-guided Dice, which scores what the model would show "
              "after the questions it would ask, can."]  # fmt: skip
    (out / "eig_study.md").write_text("\n".join(lines) + "\n")
    (out / "eig_study.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
