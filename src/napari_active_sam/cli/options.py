"""What several commands share: model, threads, cluster and window options, progress bars."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from ..core.engine.preprocess import CT_PRESETS
from ..core.enums import ModelName, Precision, Strategy, parse_option
from ..core.errors import ActiveSamError
from ..core.progress import Progress, drain

WINDOWS = ("percentile", *CT_PRESETS)
"""Intensity windows by name: percentiles, or a CT preset in Hounsfield units."""


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give {least} or more")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _whole_number(text, 1)


def seed(text: str) -> int:
    """An argparse type: a random seed, a whole number of 0 or more."""
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a number above 0")
    return value


def existing_file(text: str) -> Path:
    """An argparse type: a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a file")
    return path


def existing_folder(text: str) -> Path:
    """An argparse type: a folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder")
    return path


def output_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--out`` (``what`` to write) and ``--overwrite`` (replace an ``--out`` that exists;
    :func:`check_output` refuses one otherwise)."""
    parser.add_argument("--out", type=Path, required=True, help=f"{what} to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an --out that exists (default: refused)")  # fmt: skip


def check_output(args: argparse.Namespace, suffixes: tuple[str, ...] = (),
                 inputs: tuple[Path | None, ...] = ()) -> None:  # fmt: skip
    """Refuse, before anything is computed, an ``--out`` that would lose what the user has:
    one of the command's ``inputs``, a name without one of ``suffixes`` (a CSV written over
    an image by a slip), a folder, or a file that exists without ``--overwrite``."""
    out = Path(args.out)
    if any(p is not None and out.exists() and Path(p).exists() and out.samefile(p)
           for p in inputs):  # fmt: skip
        raise ActiveSamError(f"--out {out} is one of this command's inputs: write elsewhere.")
    if suffixes and not out.name.lower().endswith(suffixes):
        raise ActiveSamError(f"--out {out} should end in {' or '.join(suffixes)}: give such a "
                             "file name.")  # fmt: skip
    if out.is_dir():
        raise ActiveSamError(f"--out {out} is a folder: give the file to write.")
    if out.exists() and not getattr(args, "overwrite", False):
        raise ActiveSamError(f"--out {out} exists: choose a new file, or replace it with "
                             "--overwrite.")  # fmt: skip


def check_labels_apart(image: Path, labels: Path, flag: str = "--labels") -> None:
    """Refuse labels (``flag``) that are the image file or folder itself (a slip that would
    make every grey level an object)."""
    if Path(image).exists() and Path(labels).exists() and Path(labels).samefile(image):
        raise ActiveSamError(f"{flag} {labels} is the image itself: give the labels drawn "
                             "on it (0 = background, 1, 2, ... = objects).")  # fmt: skip


def scale_list(text: str) -> tuple[float, ...]:
    """An argparse type: comma-separated zoom scales, at least one, each 1 or more."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers") from None
    if not scales or not all(math.isfinite(s) and s >= 1 for s in scales):
        raise argparse.ArgumentTypeError(f"give scales of 1 or more, as 1,2 (got {text!r})")
    return scales


def strategy_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated strategy names, at least one, each known."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one strategy")
    for name in names:
        try:
            parse_option(Strategy, name, "strategy")
        except ActiveSamError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def model_options(parser: argparse.ArgumentParser, default: str = ModelName.DEMO) -> None:
    """``--model`` and ``--checkpoint`` (a local file, whose architecture ``--model`` names
    unless the file carries it)."""
    parser.add_argument(
        "--model",
        default=str(default),
        help=f"registered model ({', '.join(ModelName)}; default {default}), or the "
        "architecture of --checkpoint",
    )
    parser.add_argument("--checkpoint", type=existing_file, help="local checkpoint file")


def threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")


def cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where batch work runs: a running dask scheduler, or local worker processes."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running dask scheduler")
    where.add_argument(
        "--workers", type=positive_int, help="local worker processes (default: cores)"
    )


def window_option(parser: argparse.ArgumentParser, default: str | None, help: str) -> None:
    parser.add_argument("--window", default=default, choices=WINDOWS, help=help)


def store_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--store", type=Path,
        help=f"embedding store, as precompute wrote it {what}: slices stored there for this "
        "model and window are read, not encoded, and those encoded are added (default: "
        "every slice encoded, nothing kept)",
    )  # fmt: skip


def embedding_store(args: argparse.Namespace, model, name: str | None = None):
    """The embedding store of ``--store`` for ``model`` (its ``name`` sub-store, as
    precompute writes one per image of a folder), or None without ``--store``."""
    if args.store is None:
        return None
    from ..core.engine.store import EmbeddingStore, writable_store_path

    path = writable_store_path(args.store / name if name else args.store)
    return EmbeddingStore(model.encoder_id, path=path)


def fitting_options(parser: argparse.ArgumentParser, what: str, images: int, clicks: int) -> None:
    """What the commands that fit a model's companion share: the model, ``--out`` (default
    the user's own ``what`` for the model), the data (``--data`` and its ``--window``, or
    ``--images`` generated scenes), ``--clicks`` per simulated object, ``--seed`` and
    ``--threads``."""
    model_options(parser)
    adapter_option(parser)
    parser.add_argument(
        "--out", type=Path, help=f"file to write (default: the user's {what} for the model)"
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an --out that exists (default: refused)")  # fmt: skip
    parser.add_argument(
        "--data", type=existing_folder, help="labelled folder (images/, masks/) to learn from"
    )
    window_option(parser, None, "intensity window for --data (default: per dataset)")
    parser.add_argument(
        "--images", type=positive_int, default=images, help="generated scenes without --data"
    )
    parser.add_argument(
        "--clicks", type=positive_int, default=clicks, help="clicks per simulated object"
    )
    parser.add_argument("--seed", type=seed, default=0)
    threads_option(parser)


def check_fitted_output(args: argparse.Namespace) -> None:
    """:func:`check_output` for a command of :func:`fitting_options` given an ``--out``: a
    ``.pt`` file that is none of its inputs; the user's own file for the model (no
    ``--out``) is replaced, as a new fit should."""
    if args.out is not None:
        check_output(args, (".pt",), (args.checkpoint, args.data, args.adapter))


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` to torch (imported here: the parser itself stays light)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=[p.value for p in Precision],
        default=None,
        help="the image encoder's arithmetic: auto (bf16 autocast and TF32 on a CUDA GPU, "
        "fp32 elsewhere; the default, or $NAPARI_ACTIVE_SAM_PRECISION), fp32 or bf16",
    )


def adapter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adapter", type=existing_file, help="an adapter made by `napari-active-sam adapt`"
    )


def load_chosen_model(args: argparse.Namespace, device: str | None = None):
    """The model of ``--model``/``--checkpoint``, loaded (on ``device``, default the best
    one present), with ``--adapter`` applied where the command has one."""
    from ..core.engine.checkpoints import load_model

    model = load_model(args.model, args.checkpoint, device=device)
    if getattr(args, "adapter", None):
        from ..core.adapt.adapter import Adapter

        model = Adapter.load(args.adapter, model).apply(model)
    return model


def model_ref(args: argparse.Namespace):
    """The model of ``--model``/``--checkpoint`` for cluster workers, downloaded here once
    rather than by each worker."""
    from ..core.engine.checkpoints import ModelRef

    return ModelRef(args.model, str(args.checkpoint) if args.checkpoint else None).fetch()


def simulate(
    args: argparse.Namespace,
    from_objects: Callable[[], Generator[Progress, None, Any]],
    generated: Callable[[], Generator[Progress, None, Any]],
) -> Any:
    """Training examples simulated on the objects of ``--data`` when given, else on
    generated scenes; with a progress bar."""
    if args.data:
        return drain_with_bar(from_objects(), "simulate", unit="object")
    return drain_with_bar(generated(), "simulate", unit="image")


def drain_with_bar(
    progress: Generator[Progress, None, Any], description: str, unit: str = "slice"
) -> Any:
    """Run a core generator to its end, drawing a tqdm bar on stderr; return its value."""
    from tqdm import tqdm

    with tqdm(desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True) as bar:

        def show(step: Progress) -> None:
            bar.total = step.total
            bar.n = step.done
            bar.set_postfix_str(step.message, refresh=False)
            bar.refresh()

        return drain(progress, show)
