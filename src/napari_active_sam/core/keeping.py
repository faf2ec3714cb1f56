"""Where a computed result goes when the place asked for cannot be written.

Fitting a head or ranking masks takes minutes; a write that fails afterwards (a read-only
cache, an output path under a file, a full disk) must not throw the result away. It is
written into one fixed folder of the user's in the temporary directory instead, and the
error says where.
"""

from __future__ import annotations

import getpass
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import ActiveSamError, SaveError

T = TypeVar("T")


def fallback_dir() -> Path:
    """The user's fallback folder: the same one on every call, so files are not scattered
    over fresh temporary folders."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this user id (a container)
        user = "user"
    return Path(tempfile.gettempdir()) / f"napari-active-sam-{user}"


def written_whole(write: Callable[[Path], object], target: Path) -> Path:
    """``write`` a file beside ``target`` (its name ending as ``target``'s, for libraries
    that choose the format by the suffix), then move it over ``target`` in one rename: a
    write that fails part way (a full disk, a kill) leaves what ``target`` held as it was,
    and no partial file behind. Returns ``target``."""
    target = Path(target)
    partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
    try:
        write(partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def save_or_keep(write: Callable[[Path], T], target: Path, what: str) -> T:
    """``write(target)``; if that fails, ``write`` into :func:`fallback_dir` and raise.

    Parameters
    ----------
    write : callable
        Writes the result to the path it is given (creating folders as needed).
    target : Path
        Where the result was asked for.
    what : str
        What the result is, for the message ("the Bayesian head").

    Raises
    ------
    SaveError
        When ``target`` could not be written; the message names the file the result was
        kept in (or says that it could not be kept anywhere).
    """
    target = Path(target)
    try:
        return write(target)
    except OSError as exc:
        spare = fallback_dir() / "unsaved" / f"{time.strftime('%Y%m%d-%H%M%S')}-{target.name}"
        try:
            write(spare)
        except OSError as again:
            raise SaveError(
                f"Could not write {what} to {target} ({exc}) nor keep it in {spare} "
                f"({again}): free some disk space or choose a writable place, then run again."
            ) from exc
        raise SaveError(
            f"Could not write {what} to {target} ({exc}); it is kept in {spare}: copy it "
            "from there, or choose a writable place next time."
        ) from exc


def check_new_folder(out: Path, what: str) -> None:
    """Refuse to write ``what`` into ``out`` when it is a file or a folder that holds files,
    so that nothing there is overwritten or mixed with the new files.

    Raises
    ------
    ActiveSamError
        ``out`` exists and is not an empty folder.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ActiveSamError(
            f"{out} already exists and is not an empty folder: nothing was written. Choose "
            f"a new folder for {what}, or remove that one first."
        )
