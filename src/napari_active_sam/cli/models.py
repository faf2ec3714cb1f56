"""``napari-active-sam models``: the registered models, the cache and what is in it."""

from __future__ import annotations

import argparse
import json

NAME = "models"
HELP = "list models, the cache folder and what is cached"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from ..core.engine.device import choose_device
    from ..core.engine.downloads import cache_dir, cached_path
    from ..core.engine.registry import MODELS

    rows = []
    for spec in MODELS.values():
        path = cached_path(spec)
        rows.append(
            {
                "name": spec.name,
                "title": spec.title,
                "architecture": spec.architecture,
                "size_mb": round(spec.size_bytes / 1e6) if spec.size_bytes else None,
                "license": spec.license,
                "source": spec.url or "bundled with the plugin",
                "sha256": spec.sha256,
                "cached": str(path) if path else None,
            }
        )
    if args.json:
        print(
            json.dumps(
                {"cache_dir": str(cache_dir()), "device": str(choose_device()), "models": rows},
                indent=2,
            )
        )
        return 0
    print(f"cache: {cache_dir()}    device: {choose_device()}")
    # Columns as wide as their longest entry (SAM 2's names and architectures are long).
    name_width = max(len("name"), *(len(row["name"]) for row in rows))
    arch_width = max(len("architecture"), *(len(row["architecture"]) for row in rows))
    header = (f"{'name':{name_width}} {'architecture':{arch_width}} {'size':>8}  "
              f"{'status':14} license")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in rows:
        size = f"{row['size_mb']} MB" if row["size_mb"] else "-"
        if row["cached"]:
            status = "ready"
        elif row["sha256"]:
            status = "downloads"
        else:
            status = "not available"
        print(f"{row['name']:{name_width}} {row['architecture']:{arch_width}} {size:>8}  "
              f"{status:14} {row['license']}")  # fmt: skip
    return 0
