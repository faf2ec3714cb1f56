"""``napari-active-sam benchmark``: click strategies against ground truth, on a dask cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.enums import Protocol, Strategy
from ..core.errors import ActiveSamError
from . import options

DEFAULT_STRATEGIES = (
    Strategy.RITM,
    Strategy.EIG,
    Strategy.ENTROPY,
    Strategy.RANDOM,
    Strategy.ORACLE,
    Strategy.MICROSAM,
)


NAME = "benchmark"
HELP = "simulate click strategies against ground truth (NoC, mIoU, EIG vs oracle)"
DESCRIPTION = (
    "Runs every object of DATA/images + DATA/masks with each strategy through "
    "dask.distributed; rerunning with the same --out resumes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=options.existing_folder, required=True, help="folder with images/, masks/"
    )
    options.model_options(parser)
    options.adapter_option(parser)
    parser.add_argument(
        "--strategies",
        type=options.strategy_list,
        default=tuple(str(s) for s in DEFAULT_STRATEGIES),
        help=f"comma-separated, of: {', '.join(Strategy)}",
    )
    parser.add_argument(
        "--head",
        type=options.existing_file,
        help="Bayesian head file for bald (default: the model's own)",
    )
    parser.add_argument(
        "--clicks",
        type=options.positive_int,
        default=None,
        help="clicks per object (default 20); with --protocol 3d, corrections after the "
        "opening box or click (default 5)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=options.seed, default=0)
    parser.add_argument("--limit", type=options.positive_int, help="evaluate at most N objects")
    options.window_option(parser, None, "one window for all images (default: per dataset)")
    parser.add_argument(
        "--3d",
        dest="volume",
        action="store_true",
        help="annotate 3D objects on every slice (volume scores) instead of the largest slice",
    )
    parser.add_argument(
        "--protocol",
        choices=[p.value for p in Protocol],
        default=Protocol.TWO_D.value,
        help="2d: clicks on each object's largest slice (default); 3d: a box on it, "
        "propagation through the volume and corrections at the largest 3D error, scored "
        "by 3D Dice and surface Dice",
    )
    parser.add_argument(
        "--first",
        choices=["box", "click"],
        help="how the 3D protocol opens (default: a box from the object's extent)",
    )
    parser.add_argument(
        "--nsd-tolerance",
        type=options.positive_float,
        help="surface Dice tolerance of the 3D protocol, in mm (default 2)",
    )
    parser.add_argument(
        "--spacing",
        type=options.positive_float,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="voxel size in mm of the volumes whose file states none (a plain TIFF), for "
        "the 3D protocol's distances and surface Dice (default: 1 voxel, with a warning); "
        "a file's own voxel size is kept",
    )
    parser.add_argument(
        "--no-zoom",
        dest="zoom",
        action="store_false",
        help="decode every click on the whole image (default: small objects of a large image "
        "are decoded in a window around them enlarged to the model's input, as in the annotator)",
    )
    parser.add_argument(
        "--sam-chooses",
        dest="judge",
        action="store_false",
        help="show SAM's top-rated mask after a lone click (default: the quality ensemble "
        "picks among SAM's three masks, as in the annotator)",
    )
    parser.add_argument(
        "--no-insist",
        dest="insist",
        action="store_false",
        help="show SAM's answer even when it leaves clicks out (default: SAM is asked once "
        "more from the mask edited at those clicks, as in the annotator)",
    )
    options.cluster_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..core.bench.report import write_outputs
    from ..core.bench.runner import BenchmarkConfig, run_benchmark
    from ..core.bench.volumes import NSD_TOLERANCE_MM
    from ..core.cluster import dask_client

    three_d = args.protocol == Protocol.THREE_D
    if args.spacing and not three_d:
        raise ActiveSamError("--spacing is for the 3D protocol's distances: add --protocol 3d, "
                             "or leave --spacing out (the 2D protocol scores in pixels).")
    if not three_d and (args.first is not None or args.nsd_tolerance is not None):
        given = "--first" if args.first is not None else "--nsd-tolerance"
        raise ActiveSamError(f"{given} is for the 3D protocol: add --protocol 3d, or leave "
                             f"{given} out (the 2D protocol opens every object with a click "
                             "and scores IoU).")  # fmt: skip
    args.first = args.first or "box"
    if args.nsd_tolerance is None:
        args.nsd_tolerance = NSD_TOLERANCE_MM
    ref = options.model_ref(args)
    clicks = args.clicks or (5 if three_d else 20)
    config = BenchmarkConfig(
        data=args.data,
        model=ref,
        strategies=args.strategies,
        clicks=clicks,
        seed=args.seed,
        limit=args.limit,
        window=args.window,
        volume=args.volume,
        head=str(args.head) if args.head else None,
        zoom=args.zoom,
        adapter=str(args.adapter) if args.adapter else None,
        protocol=args.protocol,
        first=args.first,
        tolerance=args.nsd_tolerance,
        spacing=tuple(args.spacing) if args.spacing else None,
        judge=args.judge,
        insist=args.insist,
    )
    with dask_client(args.scheduler, args.workers) as (client, info):
        steps = run_benchmark(config, args.out, client, info.torch_threads)
        records = options.drain_with_bar(steps, "benchmark", unit="episode")
    model_id = ref.model_id()
    if args.adapter:
        from ..core.adapt.adapter import Adapter

        model_id = Adapter.load(args.adapter).adapted_id(ref)
    meta = {
        "model": model_id,
        **({"adapter": str(args.adapter)} if args.adapter else {}),
        "data": str(args.data),
        "clicks": clicks,
        "seed": args.seed,
        "strategies": [str(s) for s in config.strategies],
        **({"protocol": "3d", "first": args.first, "tolerance": args.nsd_tolerance}
           if three_d else {}),  # fmt: skip
    }
    summary = write_outputs(records, meta, args.out)
    if not records:
        raise ActiveSamError(
            f"Nothing was evaluated: no object of {args.data} could be run (see "
            f"{args.out / 'skipped.json'} for why each file was left out)."
        )
    unit = summary.get("spacing_unknown", [])  # the 3D protocol's volumes without a voxel size
    if unit:
        print(f"warning: {', '.join(unit)} state{'s' if len(unit) == 1 else ''} no voxel size: "
              f"distances and NSD's tolerance of {args.nsd_tolerance:g} are in voxels; give "
              "--spacing Z Y X (mm), or such volumes as NIfTI, DICOM or a TIFF with ImageJ or "
              "OME sizes", file=sys.stderr)  # fmt: skip
    for name, figures in summary["strategies"].items():
        if three_d:
            print(
                f"{name:9} objects {figures['objects']:4d}  DSC {figures['dsc'][0]:.3f} → "
                f"{figures['final_dsc']:.3f}  NSD {figures['final_nsd']:.3f}  DSC_AUC "
                f"{figures['dsc_auc']:.3f}  {figures['seconds_per_interaction']:.2f} s each",
                file=sys.stderr,
            )
            continue
        print(
            f"{name:9} objects {figures['objects']:4d}  mIoU@1 {figures['miou'][0]:.3f}  "
            f"AUC {figures['auc']:.3f}  NoC@85 {figures['noc']['85']:.2f}",
            file=sys.stderr,
        )
    print(f"results in {args.out}", file=sys.stderr)
    return 0
