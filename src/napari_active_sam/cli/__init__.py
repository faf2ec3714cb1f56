"""The ``napari-active-sam`` command: one module per subcommand, each with ``add_parser``
and ``run``; :mod:`.main` puts them together."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
