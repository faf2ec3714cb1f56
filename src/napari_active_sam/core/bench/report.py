"""Benchmark outputs: summary.json, clicks.csv, plots and a short report.md."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import (
    NOC_THRESHOLDS,
    area_under_curve,
    delta_iou_curve,
    mean_segmentation_accuracy,
    number_of_clicks,
)


def _curves(records: list[dict[str, Any]], key: str) -> dict[str, np.ndarray]:
    grouped: dict[str, list[list[float]]] = defaultdict(list)
    for record in records:
        grouped[record["strategy"]].append(record[key])
    return {s: np.array(v, float) for s, v in grouped.items()}


def summarise(records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Per-strategy figures: mIoU per click, AUC, NoC@80/85/90, NoF@85/90, ΔIoU, mSA,
    Dice and Oracle Dice per click."""
    ious, dices, oracles = (
        _curves(records, "iou"),
        _curves(records, "dice"),
        _curves(records, "oracle_dice"),
    )
    clicks = int(meta["clicks"])
    all_means = np.concatenate([c.mean(axis=0) for c in ious.values()]) if ious else []
    span = (float(np.min(all_means)), float(np.max(all_means))) if len(all_means) else None
    summary: dict[str, Any] = dict(meta)
    summary["strategies"] = {}
    for strategy, curves in sorted(ious.items()):
        noc = {
            str(round(t * 100)): float(np.mean([number_of_clicks(c, t, clicks) for c in curves]))
            for t in NOC_THRESHOLDS
        }
        nof = {
            str(round(t * 100)): int(sum(not (c[:clicks] >= t).any() for c in curves))
            for t in NOC_THRESHOLDS[1:]
        }
        summary["strategies"][strategy] = {
            "miou": [round(float(v), 4) for v in curves.mean(axis=0)],
            "auc": round(area_under_curve(curves.mean(axis=0)), 4),
            "noc": {k: round(v, 3) for k, v in noc.items()},
            "nof": nof,
            "objects": int(len(curves)),
            "delta_iou": [round(float(v), 4) for v in delta_iou_curve(curves)],
            "delta_iou_normalised": [
                round(float(v), 4) for v in delta_iou_curve(curves, normalise=span)
            ],
            "msa": round(mean_segmentation_accuracy(curves[:, -1]), 4),
            "dice": [round(float(v), 4) for v in dices[strategy].mean(axis=0)],
            "oracle_dice": [round(float(v), 4) for v in oracles[strategy].mean(axis=0)],
        }
    # Flat per-strategy keys, as tools reading summary.json expect them.
    for strategy, figures in summary["strategies"].items():
        summary[strategy] = {k: figures[k] for k in ("miou", "auc", "noc", "nof", "objects")}
    return summary


def write_clicks_csv(records: list[dict[str, Any]], path: Path) -> None:
    """One row per click: ``object,strategy,click,row,col,positive,iou,dice``.

    ``click`` counts iterations from 1; micro-sam's protocol adds two points per iteration,
    written as two rows with the same ``click``. In 3D mode each slice of an object is listed
    as ``image:label@z`` with its own scores. An iteration where the strategy had nothing
    left to ask has an empty row and column.
    """
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "strategy", "click", "row", "col", "positive", "iou", "dice"])
        for record in records:
            name = f"{record['image']}:{record['label']}"
            # Objects annotated slice by slice (3D mode) get one object name per slice.
            parts = [
                (f"{name}@{','.join(map(str, s['slice']))}", s) for s in record["slices"]
            ] if "slices" in record else [(name, record)]  # fmt: skip
            for object_name, part in parts:
                for number, (points, iou, dice) in enumerate(
                    zip(part["clicks"], part["iou"], part["dice"], strict=True), start=1
                ):
                    for row, col, positive in points or [("", "", "")]:
                        writer.writerow(
                            [object_name, record["strategy"], number, row, col, positive, iou,
                             dice]
                        )  # fmt: skip


def write_plots(summary: dict[str, Any], out: Path) -> list[Path]:
    """mIoU per click, NoC bars, and EIG-guided Dice against Oracle Dice; PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = summary["strategies"]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, fig_data in strategies.items():
        ax.plot(range(1, len(fig_data["miou"]) + 1), fig_data["miou"], marker=".", label=name)
    ax.set(xlabel="click", ylabel="mean IoU", title=f"mIoU per click — {summary['model']}")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(out / "miou_per_click.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(strategies)
    width = 0.25
    for i, threshold in enumerate(("80", "85", "90")):
        values = [strategies[n]["noc"][threshold] for n in names]
        ax.bar(np.arange(len(names)) + (i - 1) * width, values, width, label=f"NoC@{threshold}")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set(ylabel="clicks (lower is better)", title="Number of clicks")
    ax.legend()
    paths.append(out / "noc.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    if "eig" in strategies:
        fig, ax = plt.subplots(figsize=(6, 4))
        eig = strategies["eig"]
        x = range(1, len(eig["dice"]) + 1)
        ax.plot(x, eig["dice"], marker=".", label="EIG-guided Dice (shown mask)")
        ax.plot(x, eig["oracle_dice"], marker=".", ls="--", label="Oracle Dice, EIG clicks")
        if "oracle" in strategies:
            ax.plot(x, strategies["oracle"]["oracle_dice"], ls=":", label="Oracle Dice, oracle")
        ax.set(xlabel="click", ylabel="mean Dice", title="EIG-guided vs Oracle Dice")
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(out / "eig_vs_oracle.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return paths


def write_report(summary: dict[str, Any], skipped: list[dict[str, str]], out: Path) -> Path:
    """A short Markdown report: the table, the plots, what was skipped."""
    lines = [
        f"# Benchmark: {summary['model']} on {summary['data']}",
        "",
        f"{summary['clicks']} clicks per object, seed {summary['seed']}. Every strategy but "
        "micro-sam's opens with the RITM click; strategies that do not see the ground truth "
        "(bald, eig, entropy, random) get the true label of the pixel they ask about. "
        "Columns count iterations: one click each, except micro-sam's protocol, whose "
        "iterations add a positive and a negative point (its NoC in points is about twice "
        "the figure shown).",
        "",
        "| strategy | objects | mIoU@1 | mIoU@5 | AUC | NoC@80 | NoC@85 | NoC@90 | NoF@85 "
        "| NoF@90 | mSA |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["strategies"].items():
        at5 = s["miou"][4] if len(s["miou"]) > 4 else s["miou"][-1]
        lines.append(
            f"| {name} | {s['objects']} | {s['miou'][0]:.3f} | {at5:.3f} | {s['auc']:.3f} "
            f"| {s['noc']['80']:.2f} | {s['noc']['85']:.2f} | {s['noc']['90']:.2f} "
            f"| {s['nof']['85']} | {s['nof']['90']} | {s['msa']:.3f} |"
        )
    lines += ["", "![mIoU per click](miou_per_click.png)", "", "![NoC](noc.png)", ""]
    if "eig" in summary["strategies"]:
        eig = summary["strategies"]["eig"]
        gap = float(np.mean(np.array(eig["oracle_dice"]) - np.array(eig["dice"])))
        lines += [
            "## EIG-guided Dice against Oracle Dice",
            "",
            "Oracle Dice picks the best of SAM's three multimask outputs with the ground "
            "truth; EIG-guided Dice scores the mask the model itself ranks first after clicks "
            f"chosen by expected information gain. The mean gap here is {gap:.3f}: the "
            "larger it is, the more oracle numbers flatter what a user of this model sees.",
            "",
            "![EIG vs Oracle](eig_vs_oracle.png)",
            "",
        ]
    if skipped:
        lines += ["## Skipped", ""] + [f"- `{s['file']}`: {s['reason']}" for s in skipped]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


VOLUME_FIGURES = ("dsc_auc", "nsd_auc", "final_dsc", "final_nsd", "seconds_per_interaction")


def summarise_volumes(records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Per-strategy figures of the 3D protocol: mean 3D Dice and surface Dice after each
    interaction (``dsc``, ``nsd``), their areas under the curve, the final values and the
    seconds per interaction, averaged over objects. ``spacing_unknown`` lists the volumes
    whose file records no voxel size and that were given none: their surface Dice
    tolerance is in voxels, not millimetres. ``encode_seconds`` is the time taken to
    encode each volume's slices before its episodes (charged to no interaction)."""
    summary: dict[str, Any] = dict(meta)
    volumes = {r["image"]: r for r in records}
    summary["spacing_unknown"] = sorted(
        name for name, r in volumes.items() if not (r["spacing_known"] or r["spacing_given"])
    )
    summary["encode_seconds"] = {
        name: r["encode_seconds"] for name, r in sorted(volumes.items()) if "encode_seconds" in r
    }
    summary["strategies"] = {}
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        grouped[record["strategy"]].append(record)
    for strategy, group in sorted(grouped.items()):
        figures: dict[str, Any] = {
            "objects": len(group),
            "dsc": [round(float(v), 4) for v in np.mean([r["dsc"] for r in group], axis=0)],
            "nsd": [round(float(v), 4) for v in np.mean([r["nsd"] for r in group], axis=0)],
        }
        for key in VOLUME_FIGURES:
            figures[key] = round(float(np.mean([r[key] for r in group])), 4)
        summary["strategies"][strategy] = figures
        summary[strategy] = figures
    return summary


def write_interactions_csv(records: list[dict[str, Any]], path: Path) -> None:
    """One row per click of the 3D protocol (a box is a row without a click):
    ``object,strategy,interaction,kind,slice,row,col,positive,dsc,nsd,seconds``."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "strategy", "interaction", "kind", "slice", "row", "col",
                         "positive", "dsc", "nsd", "seconds"])  # fmt: skip
        for record in records:
            name = f"{record['image']}:{record['label']}"
            for number, step in enumerate(record["interactions"], start=1):
                scores = [record["dsc"][number - 1], record["nsd"][number - 1],
                          record["seconds"][number - 1]]  # fmt: skip
                for row, col, positive in step["clicks"] or [("", "", "")]:
                    writer.writerow([name, record["strategy"], number, step["kind"],
                                     step["slice"], row, col, positive, *scores])  # fmt: skip


def _tolerance(summary: dict[str, Any], tolerance: float) -> str:
    """The surface Dice tolerance with its unit, which is voxels where the spacing is
    unknown."""
    unknown = summary["spacing_unknown"]
    if not unknown:
        return f"{tolerance:g} mm"
    names = ", ".join(f"`{name}`" for name in unknown)
    return (f"{tolerance:g} mm; {tolerance:g} voxels in {names}, whose file records no voxel "
            "size: give it with `--spacing Z Y X`")  # fmt: skip


def _encoding(seconds: dict[str, float]) -> str:
    if not seconds:
        return "time not recorded"
    return ", ".join(f"{name} in {value:.1f} s" for name, value in seconds.items())


def write_volume_outputs(
    records: list[dict[str, Any]], meta: dict[str, Any], out: Path, skipped: list[dict]
) -> dict[str, Any]:
    """summary.json, interactions.csv, a Dice/NSD plot and report.md of a 3D run."""
    summary = summarise_volumes(records, meta)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_interactions_csv(records, out / "interactions.csv")
    lines = [
        f"# 3D benchmark: {summary['model']} on {summary['data']}",
        "",
        f"Per object: a {meta.get('first', 'box')} on its largest slice, propagation, then "
        f"{summary['clicks']} corrections, each on the slice of the largest 3D error's centre "
        "and followed by propagation from every corrected slice. Dice and normalised "
        f"surface Dice (tolerance {_tolerance(summary, meta.get('tolerance', 2.0))}) of the "
        "whole object after each interaction; AUC by the trapezoid rule over interactions. "
        "Seconds per interaction are those of prompting, decoding and propagation; the "
        "slices were encoded before (" + _encoding(summary["encode_seconds"]) + ").",
        "",
        "| strategy | objects | DSC first | DSC final | NSD final | DSC_AUC | NSD_AUC "
        "| s / interaction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["strategies"].items():
        lines.append(
            f"| {name} | {s['objects']} | {s['dsc'][0]:.3f} | {s['final_dsc']:.3f} "
            f"| {s['final_nsd']:.3f} | {s['dsc_auc']:.3f} | {s['nsd_auc']:.3f} "
            f"| {s['seconds_per_interaction']:.2f} |"
        )
    if records:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, s in summary["strategies"].items():
            steps = range(1, len(s["dsc"]) + 1)
            ax.plot(steps, s["dsc"], marker=".", label=f"{name} DSC")
            ax.plot(steps, s["nsd"], marker=".", ls="--", label=f"{name} NSD")
        ax.set(xlabel="interaction", ylabel="mean score", title=f"3D — {summary['model']}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.savefig(out / "dsc_nsd_per_interaction.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        lines += ["", "![DSC and NSD per interaction](dsc_nsd_per_interaction.png)"]
    if skipped:
        lines += ["", "## Skipped", ""] + [f"- `{s['file']}`: {s['reason']}" for s in skipped]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return summary


def write_outputs(records: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write summary.json, clicks.csv, the plots and report.md into ``out`` (for the 3D
    protocol: summary.json, interactions.csv, a plot and report.md)."""
    out = Path(out)
    if meta.get("protocol") == "3d":
        skipped_file = out / "skipped.json"
        skipped = json.loads(skipped_file.read_text()) if skipped_file.is_file() else []
        return write_volume_outputs(records, meta, out, skipped)
    summary = summarise(records, meta)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    write_clicks_csv(records, out / "clicks.csv")
    skipped_file = out / "skipped.json"
    skipped = json.loads(skipped_file.read_text()) if skipped_file.is_file() else []
    if records:
        write_plots(summary, out)
    write_report(summary, skipped, out)
    return summary
