"""Where model files live: the bundled sample data, the cache folder, and verified
downloads of published checkpoints."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pooch
import requests

from ..errors import DownloadError, ModelNotAvailableError
from ..keeping import fallback_dir
from ..progress import Progress
from .registry import ModelSpec

CACHE_ENV = "NAPARI_ACTIVE_SAM_CACHE"
"""Environment variable that overrides the checkpoint/embedding cache directory."""


def cache_dir() -> Path:
    """Directory for downloaded checkpoints and embedding stores.

    ``$NAPARI_ACTIVE_SAM_CACHE`` if set, else the platform's user cache directory.
    """
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(pooch.os_cache("napari-active-sam"))


def is_writable_dir(path: Path) -> bool:
    """True if ``path`` exists (or can be created) and a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True


ProgressCallback = Callable[[Progress], None]


class _DownloadProgress:
    """Adapter from pooch's tqdm-like progress protocol to a ``Progress`` callback."""

    def __init__(self, callback: ProgressCallback, label: str):
        self._callback = callback
        self._label = label
        self.total = 0
        self.n = 0

    def update(self, n: int) -> None:
        self.n += n
        self._callback(Progress(self.n, self.total, f"downloading {self._label}"))

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        self._callback(Progress(self.n, self.total, f"downloaded {self._label}"))


def fetch_checkpoint(
    spec: ModelSpec,
    directory: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Return the local path of ``spec``'s checkpoint, downloading it if needed.

    The file is checked against ``spec.sha256``; a file that fails the check is deleted and
    a :class:`DownloadError` raised. An unwritable cache directory falls back to the user's
    one fallback folder (:func:`~napari_active_sam.core.keeping.fallback_dir`), with a
    warning, so the model still loads and a second load finds it there.

    Parameters
    ----------
    spec : ModelSpec
        A registry entry with ``url`` and ``sha256`` set.
    directory : Path, optional
        Cache directory; default :func:`cache_dir`.
    progress : callable, optional
        Called with :class:`Progress` records in bytes while downloading.
    """
    if not spec.url or not spec.sha256:
        raise ModelNotAvailableError(f"Model {spec.name!r} has no download address.")
    directory = Path(directory) if directory is not None else cache_dir()
    if not is_writable_dir(directory):
        fallback = fallback_dir() / "downloads"  # one folder, so a second load finds it
        fallback.mkdir(parents=True, exist_ok=True)
        warnings.warn(
            f"Cache directory {directory} is not writable; downloading {spec.filename} into "
            f"the temporary folder {fallback} instead. Set {CACHE_ENV} to a writable folder "
            "to keep downloads between sessions.",
            RuntimeWarning,
            stacklevel=2,
        )
        directory = fallback
    bar = _DownloadProgress(progress, spec.filename) if progress else False
    try:
        path = pooch.retrieve(
            spec.url,
            known_hash=f"sha256:{spec.sha256}",
            fname=spec.filename,
            path=directory,
            progressbar=bar,
        )
    except ValueError as exc:  # pooch's hash mismatch; it has removed the download already
        (directory / spec.filename).unlink(missing_ok=True)
        raise DownloadError(
            f"The download of {spec.title} from {spec.url} does not match its published "
            f"SHA-256 and was deleted ({exc}). Try again later, or download the file yourself "
            "and load it as a local checkpoint."
        ) from exc
    except (requests.RequestException, OSError) as exc:
        raise DownloadError(
            f"Could not download {spec.title} from {spec.url}: {exc}. Check the network, or "
            "download the file yourself and load it as a local checkpoint."
        ) from exc
    return Path(path)


def cached_path(spec: ModelSpec, directory: Path | None = None) -> Path | None:
    """Path of ``spec``'s checkpoint if already present (bundled or downloaded), else None."""
    if spec.bundled:
        path = bundled_path(spec.bundled)
        return path if path.is_file() else None
    path = (Path(directory) if directory is not None else cache_dir()) / spec.filename
    return path if path.is_file() else None


def bundled_path(filename: str) -> Path:
    """Path of a file in the package's ``sample_data`` folder (wheel or source checkout)."""
    from importlib.resources import files

    packaged = Path(str(files("napari_active_sam"))) / "sample_data" / filename
    if packaged.exists():
        return packaged
    # A source checkout keeps sample_data/ at the repository's top level.
    return Path(__file__).resolve().parents[4] / "sample_data" / filename
