"""The napari layer: docks, the annotation controller they subscribe to, the worker host.

Importing it keeps Triton out of a viewer whose OpenGL already runs on Mesa's LLVM (napari's
canvas on a machine without a GPU driver): Triton's own LLVM, loaded into such a process,
crashes it, and torchvision (the quality regressor's network) imports Triton through
``torch._dynamo``. The plugin compiles nothing with Triton.
"""

import sys
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
