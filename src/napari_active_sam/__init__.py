"""napari-active-sam: Segment Anything in napari that suggests the next click.

Importing the package keeps Triton out of a process whose OpenGL already runs on Mesa's
LLVM (napari's canvas drawn by Mesa, as on a machine without a GPU driver): Triton's own
LLVM, loaded into such a process, crashes it, and torchvision and segment-anything import
Triton through ``torch._dynamo`` as soon as a dock, a sample or the reader loads the
engine. The plugin compiles nothing with Triton.
"""

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _keep_triton_out_of_mesa_processes() -> None:
    """Mark Triton unavailable where Mesa's LLVM is already mapped and Triton is not."""
    if "triton" in sys.modules:
        return
    try:
        mapped = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux: no such clash has been seen there
        return
    if "libLLVM" in mapped:
        sys.modules["triton"] = None  # `import triton` now fails cleanly; torch goes on


_keep_triton_out_of_mesa_processes()

try:
    __version__ = version("napari-active-sam")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
