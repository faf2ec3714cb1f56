"""napari-active-sam: Segment Anything in napari that suggests the next click."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-active-sam")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
