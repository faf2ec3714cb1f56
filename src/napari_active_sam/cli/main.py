"""The command line's parser and entry point.

Each command module names itself (``NAME``, ``HELP``, optionally ``DESCRIPTION``) and has
``add_arguments(parser)`` and ``run(args)``.

Building the parser loads no torch: each command imports what it needs when it runs, and
choices come from :mod:`napari_active_sam.core.enums`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from ..core.errors import ActiveSamError
from . import (
    adapt,
    benchmark,
    convert,
    demo,
    export,
    make_dataset,
    make_real_dataset,
    measure,
    models,
    precompute,
    quality,
    train_demo_model,
    train_head,
    train_quality,
)

COMMANDS = (
    models,
    precompute,
    benchmark,
    make_dataset,
    make_real_dataset,
    train_demo_model,
    train_head,
    quality,
    measure,
    export,
    convert,
    train_quality,
    adapt,
    demo,
)
"""Every subcommand, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-active-sam",
        description="Segment Anything with uncertainty and suggested clicks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        description = getattr(command, "DESCRIPTION", None)
        # argparse formats help with %: a "95 % interval" would break the listing
        summary = command.HELP.replace("%", "%%")
        parser_ = sub.add_parser(command.NAME, help=summary, description=description)
        command.add_arguments(parser_)
        parser_.set_defaults(func=command.run)
    return parser


def _plain_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as a line for the user, not the source line that raised it."""
    return f"napari-active-sam: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    formatted = warnings.formatwarning
    warnings.formatwarning = _plain_warning
    try:
        return args.func(args)
    except ActiveSamError as exc:
        print(f"napari-active-sam: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system refused: not a folder, no space, no permission
        print(f"napari-active-sam: error: {exc}; check the path and its permissions.",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt:
        print("\nnapari-active-sam: interrupted. A command that saves its progress (train-"
              "demo-model, benchmark) goes on from there when run again the same way "
              "(train-demo-model with --resume).", file=sys.stderr)  # fmt: skip
        return 130
    finally:
        warnings.formatwarning = formatted


if __name__ == "__main__":
    sys.exit(main())
