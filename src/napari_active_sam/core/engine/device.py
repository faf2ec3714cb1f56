"""What a GPU needs from the engine: the encoder's arithmetic, and one trip to the host.

On a CUDA device the image encoder runs under bf16 autocast with TF32 matrix products unless
the user asks for full fp32 (:class:`~napari_active_sam.core.enums.Precision`, the
``NAPARI_ACTIVE_SAM_PRECISION`` environment variable). Results leave the device through
:func:`to_host`: every copy is queued without waiting and the host waits once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

from ..enums import Precision, parse_option
from ..errors import ModelError

DEVICE_ENV = "NAPARI_ACTIVE_SAM_DEVICE"
"""Environment variable that overrides the automatic device choice (cuda, mps, cpu)."""


def choose_device(requested: str | None = None) -> torch.device:
    """Pick the torch device: CUDA, then Apple MPS, then CPU.

    Parameters
    ----------
    requested : str, optional
        ``"auto"`` (default), ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``. When None,
        ``$NAPARI_ACTIVE_SAM_DEVICE`` is used if set.

    Raises
    ------
    ModelError
        If the requested device is not available on this machine.
    """
    requested = (requested or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ModelError(
            f"Unknown device {requested!r}: use auto, cuda, cuda:N, mps or cpu."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "CUDA was requested but PyTorch sees no CUDA GPU here: choose 'auto' or 'cpu', "
            "or install a CUDA build of PyTorch."
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ModelError(
            f"{requested} was requested but only {torch.cuda.device_count()} GPU(s) exist."
        )
    if device.type == "mps" and not mps_ok:
        raise ModelError("Apple MPS was requested but is not available: choose 'auto' or 'cpu'.")
    return device


PRECISION_ENV = "NAPARI_ACTIVE_SAM_PRECISION"
"""Environment variable that sets the encoder's precision (auto, fp32, bf16)."""


def resolve_precision(precision: Precision | str | None, device: torch.device) -> Precision:
    """``precision`` (default ``$NAPARI_ACTIVE_SAM_PRECISION``, else auto) made concrete for
    ``device``: AUTO becomes BF16 on CUDA and FP32 elsewhere.

    Raises
    ------
    ActiveSamError
        An unknown name.
    """
    chosen = precision or os.environ.get(PRECISION_ENV) or Precision.AUTO
    chosen = parse_option(Precision, str(chosen).strip().lower(), "encoder precision")
    if chosen is Precision.AUTO:
        return Precision.BF16 if device.type == "cuda" else Precision.FP32
    return chosen


@contextlib.contextmanager
def encoder_arithmetic(precision: Precision, device: torch.device) -> Iterator[None]:
    """Run the block in ``precision`` on ``device``: bf16 autocast, and on CUDA TF32 for
    the fp32 matrix products and convolutions that autocast leaves in fp32 (restored on
    exit)."""
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_tf32(precision is Precision.BF16))
        if precision is Precision.BF16:
            stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        yield


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        before = matmul.fp32_precision, conv.fp32_precision
        value = "tf32" if enabled else "ieee"
        matmul.fp32_precision = conv.fp32_precision = value
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = before
        return
    before = matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def to_host(*tensors: torch.Tensor) -> tuple[np.ndarray, ...]:
    """numpy copies of ``tensors``; from a CUDA device every copy is queued into pinned
    memory and the host waits once, for all of them. CPU tensors are returned as views."""
    if not tensors or all(t.device.type == "cpu" for t in tensors):
        return tuple(t.detach().numpy() for t in tensors)
    copies = []
    for tensor in tensors:
        if tensor.device.type == "cuda":
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            copies.append(buffer.copy_(tensor.detach(), non_blocking=True))
        else:
            copies.append(tensor.detach().cpu())
    for device in {t.device for t in tensors if t.device.type == "cuda"}:
        torch.cuda.current_stream(device).synchronize()
    return tuple(copy.numpy() for copy in copies)


def to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor of ``array`` on ``device`` (no copy when it is there already); host arrays
    bound for a CUDA device travel through pinned memory without making the host wait."""
    tensor = torch.as_tensor(array)
    if tensor.device.type == device.type and device.index in (None, tensor.device.index):
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
