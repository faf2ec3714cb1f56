"""Model registry, checkpoint download and cache, secure loading, device choice.

A *model* is a named set of weights (``vit_b``, ``medsam``, ``demo`` ...); an *architecture*
is the segment-anything configuration those weights fit. Every checkpoint is read with
``torch.load(..., weights_only=True)``; downloads are checked against a published SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pooch
import requests
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d

from .errors import CheckpointError, DownloadError, ModelError, ModelNotAvailableError
from .types import Progress

CACHE_ENV = "NAPARI_ACTIVE_SAM_CACHE"
"""Environment variable that overrides the checkpoint/embedding cache directory."""

DEVICE_ENV = "NAPARI_ACTIVE_SAM_DEVICE"
"""Environment variable that overrides the automatic device choice (cuda, mps, cpu)."""

CHECKPOINT_FORMAT = "napari-active-sam/1"
"""Tag of checkpoints written by this project (they carry their architecture)."""


@dataclass(frozen=True)
class Architecture:
    """A segment-anything configuration: ViT image encoder, prompt encoder, mask decoder.

    The official models differ only in the encoder's width, depth, heads and global-attention
    blocks; the small test and demo models also shrink the image size and decoder.
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    encoder: str = "vit"

    @property
    def embedding_size(self) -> int:
        """Side of the square image embedding (64 for the 1024 models)."""
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask grid (256 for the 1024 models)."""
        return 4 * self.embedding_size

    def build(self) -> Sam:
        """Return a randomly initialised ``Sam`` in eval mode."""
        dim = self.prompt_embed_dim
        grid = self.embedding_size
        if self.encoder == "vit":
            image_encoder: torch.nn.Module = ImageEncoderViT(
                depth=self.encoder_depth,
                embed_dim=self.encoder_embed_dim,
                img_size=self.img_size,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=self.encoder_num_heads,
                patch_size=self.patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=self.encoder_global_attn_indexes,
                window_size=self.window_size,
                out_chans=dim,
            )
        elif self.encoder == "cnn":
            image_encoder = ConvImageEncoder(
                self.img_size, self.patch_size, self.encoder_embed_dim, self.encoder_depth, dim
            )
        else:
            raise ModelError(f"Unknown encoder type {self.encoder!r}: use vit or cnn.")
        sam = Sam(
            image_encoder=image_encoder,
            prompt_encoder=PromptEncoder(
                embed_dim=dim,
                image_embedding_size=(grid, grid),
                input_image_size=(self.img_size, self.img_size),
                mask_in_chans=self.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=self.decoder_depth,
                    embedding_dim=dim,
                    mlp_dim=self.decoder_mlp_dim,
                    num_heads=self.decoder_num_heads,
                ),
                transformer_dim=dim,
                iou_head_depth=3,
                iou_head_hidden_dim=self.iou_head_hidden_dim,
            ),
        )
        return sam.eval()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        fields = dict(data)
        fields["encoder_global_attn_indexes"] = tuple(fields["encoder_global_attn_indexes"])
        return cls(**fields)


class _ResidualBlock(torch.nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation),
            LayerNorm2d(channels),
            torch.nn.GELU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1),
            LayerNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x + self.body(x))


class ConvImageEncoder(torch.nn.Module):
    """A small convolutional stand-in for SAM's ViT encoder, same output contract.

    Strided convolutions bring the ``img_size`` input down by ``patch_size`` (a power of
    two), dilated residual blocks widen the receptive field to most of the image, and a
    SAM-style neck projects to ``out_chans``. It trains far faster than a ViT on a CPU,
    which is what the bundled demo model needs.

    Parameters
    ----------
    img_size : int
        Side of the square input.
    patch_size : int
        Downsampling factor; the embedding is ``img_size // patch_size`` square.
    width : int
        Channels of the last stage (earlier stages use a quarter and a half of it).
    depth : int
        Dilated residual blocks at the embedding resolution (dilations 1, 2, 4, 8, ...).
    out_chans : int
        Embedding channels (the prompt embedding dimension).
    """

    def __init__(self, img_size: int, patch_size: int, width: int, depth: int, out_chans: int):
        super().__init__()
        self.img_size = img_size
        stages = int(np.log2(patch_size))
        if 2**stages != patch_size:
            raise ModelError(f"patch_size must be a power of two, got {patch_size}.")
        layers: list[torch.nn.Module] = []
        channels = 3
        for i in range(stages):
            out = max(width >> (stages - 1 - i), 16)
            layers += [
                torch.nn.Conv2d(channels, out, 3, stride=2, padding=1),
                LayerNorm2d(out),
                torch.nn.GELU(),
            ]
            channels = out
        layers += [_ResidualBlock(channels, 2 ** (i % 4)) for i in range(depth)]
        self.body = torch.nn.Sequential(*layers)
        self.neck = torch.nn.Sequential(
            torch.nn.Conv2d(channels, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            torch.nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(x))


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("vit_b", 768, 12, 12, (2, 5, 8, 11)),
        Architecture("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
        Architecture("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    )
}
"""Architectures a local checkpoint can name; keys match segment-anything's registry."""

SMOKE_ARCHITECTURE = Architecture(
    name="tiny",
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    img_size=128,
    window_size=4,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
"""A SAM small enough for tests and smoke runs: segment-anything's own modules with a 128 px
input, an 8×8 embedding and a 32×32 low-resolution grid."""


class ModelName(StrEnum):
    """Registered models."""

    VIT_B = "vit_b"
    """SAM ViT-B (Kirillov et al. 2023), 358 MB."""
    VIT_L = "vit_l"
    """SAM ViT-L, 1.2 GB."""
    VIT_H = "vit_h"
    """SAM ViT-H, 2.4 GB: the most accurate and the slowest."""
    MEDSAM = "medsam"
    """MedSAM (Ma et al. 2024): SAM ViT-B fine-tuned on 1.5 M medical image-mask pairs."""
    DEMO = "demo"
    """This project's small model, shipped in the wheel: works offline and on a CPU."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights come from and what they are.

    Exactly one of ``url`` (downloaded into the cache) and ``bundled`` (a file shipped in the
    package's ``sample_data``) is set for a model that is available.
    """

    name: str
    title: str
    architecture: str
    license: str
    description: str
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    bundled: str | None = None
    homepage: str = ""

    @property
    def filename(self) -> str:
        if self.bundled:
            return self.bundled
        if self.url:
            return self.url.rsplit("/", 1)[-1].split("?", 1)[0]
        return f"{self.name}.pt"


_SAM_HOME = "https://github.com/facebookresearch/segment-anything"
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

MODELS: dict[ModelName, ModelSpec] = {
    ModelName.VIT_B: ModelSpec(
        name="vit_b",
        title="SAM ViT-B",
        architecture="vit_b",
        license="Apache-2.0",
        description="Segment Anything, base encoder. The practical choice on a CPU.",
        url=_SAM_URL + "sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        size_bytes=375_042_383,
        homepage=_SAM_HOME,
    ),
    ModelName.VIT_L: ModelSpec(
        name="vit_l",
        title="SAM ViT-L",
        architecture="vit_l",
        license="Apache-2.0",
        description="Segment Anything, large encoder.",
        url=_SAM_URL + "sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        size_bytes=1_249_524_607,
        homepage=_SAM_HOME,
    ),
    ModelName.VIT_H: ModelSpec(
        name="vit_h",
        title="SAM ViT-H",
        architecture="vit_h",
        license="Apache-2.0",
        description="Segment Anything, huge encoder. Best masks; wants a GPU.",
        url=_SAM_URL + "sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        size_bytes=2_564_550_879,
        homepage=_SAM_HOME,
    ),
    ModelName.MEDSAM: ModelSpec(
        name="medsam",
        title="MedSAM ViT-B",
        architecture="vit_b",
        license="Apache-2.0 (code); see the MedSAM repository for the weights' terms",
        description="SAM ViT-B fine-tuned on CT, MRI, ultrasound, X-ray and more; "
        "trained with box prompts.",
        url="https://zenodo.org/records/10689643/files/medsam_vit_b.pth",
        sha256="34b34b78c1d18cb8c6bf84cf9c00e135d6d6c965699f3c0e31ef1bc9dcb5be74",
        size_bytes=375_049_145,
        homepage="https://github.com/bowang-lab/MedSAM",
    ),
    ModelName.DEMO: ModelSpec(
        name="demo",
        title="napari-active-sam demo",
        architecture="demo",
        license="BSD-3-Clause",
        description="Small SAM-family model trained by this project on generated images; "
        "ships with the plugin, runs offline on a CPU.",
        bundled="demo_model.pt",
    ),
}


def model_names() -> list[str]:
    """Names of every registered model, in registry order."""
    return [name.value for name in MODELS]


def get_spec(name: str) -> ModelSpec:
    """Return the registry entry for ``name``.

    Raises
    ------
    ModelError
        If no model of that name is registered.
    """
    try:
        return MODELS[ModelName(name)]
    except ValueError:
        raise ModelError(
            f"Unknown model {name!r}. Choose one of {', '.join(model_names())}, "
            "or load a local checkpoint with its architecture name."
        ) from None


# --------------------------------------------------------------------------- cache and device


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


# ------------------------------------------------------------------------------- downloading


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
    a :class:`DownloadError` raised. An unwritable cache directory falls back to a
    temporary directory, with a warning, so the model still loads.

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
        fallback = Path(tempfile.mkdtemp(prefix="napari-active-sam-"))
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
    return Path(__file__).resolve().parents[3] / "sample_data" / filename


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- loading


@dataclass(eq=False)
class LoadedModel:
    """A SAM network on a device, with what identifies its weights.

    Attributes
    ----------
    sam : Sam
        segment-anything's model, in eval mode.
    name : str
        Registry name, or the architecture name for a local checkpoint.
    architecture : Architecture
        The configuration ``sam`` was built from.
    weights_sha256 : str
        SHA-256 of the checkpoint file ("random" for untrained test models).
    """

    sam: Sam
    name: str
    architecture: Architecture
    weights_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def model_id(self) -> str:
        """Short identity used in embedding signatures: name plus weight hash prefix."""
        return model_id(self.name, self.weights_sha256)

    def to(self, device: torch.device | str) -> LoadedModel:
        self.sam.to(device)
        return self


def resolve_architecture(architecture: str | Architecture) -> Architecture:
    if isinstance(architecture, Architecture):
        return architecture
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]
    raise ModelError(
        f"Unknown architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}."
    )


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint safely and return ``(state_dict, metadata)``.

    Accepts a bare state dict (the official SAM and MedSAM files), a dict with a ``model``
    or ``state_dict`` entry, and this project's format, which also stores the architecture.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a PyTorch checkpoint, is truncated, or holds Python
        objects that ``weights_only`` loading refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist: check the path.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip, EOF and runtime errors here
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). The file may be "
            "truncated or not a checkpoint: download it again."
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path} holds a {type(payload).__name__}, not a state dict: it is not a SAM "
            "checkpoint."
        )
    metadata: dict[str, Any] = {}
    if payload.get("format") == CHECKPOINT_FORMAT:
        metadata = {k: v for k, v in payload.items() if k != "state_dict"}
        payload = payload["state_dict"]
    else:
        for key in ("model", "state_dict"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"{path} is a dict but not a state dict of tensors.")
    return payload, metadata


def save_checkpoint(
    path: Path,
    sam: Sam,
    architecture: Architecture,
    **metadata: Any,
) -> str:
    """Write ``sam``'s weights with their architecture; return the file's SHA-256."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": architecture.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in sam.state_dict().items()},
        **metadata,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return file_sha256(path)


def _load_state(sam: Sam, state: dict[str, torch.Tensor], arch: Architecture, path: Path):
    expected = sam.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the {arch.name!r} architecture: "
            f"{len(missing)} missing keys (first: {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (first: {unexpected[:3]}). "
            "Choose the architecture the checkpoint was trained with (vit_b, vit_l, vit_h)."
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{path} does not fit the {arch.name!r} architecture: {key} has shape "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}. Choose the "
                "architecture the checkpoint was trained with."
            )
    sam.load_state_dict(state)


def load_checkpoint(
    path: Path,
    architecture: str | Architecture | None = None,
    device: str | torch.device | None = None,
    name: str | None = None,
    sha256: str | None = None,
) -> LoadedModel:
    """Build an architecture and load a local checkpoint into it.

    Parameters
    ----------
    path : Path
        The checkpoint file.
    architecture : str or Architecture, optional
        Required unless the file was written by :func:`save_checkpoint`.
    device : str or torch.device, optional
        Passed to :func:`choose_device` unless already a ``torch.device``.
    name : str, optional
        Name to record; default the architecture's name.
    sha256 : str, optional
        Known hash of the file (skips hashing it again).
    """
    path = Path(path)
    state, metadata = read_checkpoint(path)
    if architecture is None:
        if "architecture" not in metadata:
            raise CheckpointError(
                f"{path} does not say which architecture it is for: name one of "
                f"{', '.join(ARCHITECTURES)}."
            )
        arch = Architecture.from_dict(metadata["architecture"])
    else:
        arch = resolve_architecture(architecture)
    sam = arch.build()
    _load_state(sam, state, arch, path)
    target = device if isinstance(device, torch.device) else choose_device(device)
    sam.to(target)
    return LoadedModel(
        sam=sam,
        name=name or arch.name,
        architecture=arch,
        weights_sha256=sha256 or file_sha256(path),
        extra={k: v for k, v in metadata.items() if k not in ("architecture", "format")},
    )


def load_model(
    name: str,
    checkpoint: Path | None = None,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    directory: Path | None = None,
) -> LoadedModel:
    """Load a registered model, downloading it on first use, or a local checkpoint.

    Parameters
    ----------
    name : str
        A registered model (``vit_b``, ``vit_l``, ``vit_h``, ``medsam``, ``demo``), or, with
        ``checkpoint``, the architecture name of a local file (any name for a file written
        by :func:`save_checkpoint`, which carries its architecture).
    checkpoint : Path, optional
        A local checkpoint file; ``name`` then names its architecture (a registered model
        name stands for its architecture).
    device : str or torch.device, optional
        See :func:`choose_device`.
    progress : callable, optional
        Receives download progress.
    directory : Path, optional
        Cache directory for downloads.
    """
    if checkpoint is not None:
        arch: str | None = None  # files written by this project carry their architecture
        if name in {m.value for m in ModelName}:
            arch = get_spec(name).architecture
        elif name in ARCHITECTURES:
            arch = name
        return load_checkpoint(checkpoint, arch if arch in ARCHITECTURES else None, device, name)
    spec = get_spec(name)
    if spec.bundled:
        path = bundled_path(spec.bundled)
        if not path.is_file():
            raise ModelNotAvailableError(
                f"The {spec.title} model is not yet available in this version of "
                "napari-active-sam: choose vit_b, vit_l, vit_h or medsam, or a local "
                "checkpoint."
            )
        return load_checkpoint(path, None, device, name=spec.name)
    path = fetch_checkpoint(spec, directory, progress)
    return load_checkpoint(path, spec.architecture, device, name=spec.name, sha256=spec.sha256)


@dataclass(frozen=True)
class ModelRef:
    """A model by name (and optional local checkpoint), cheap to send to dask workers.

    Attributes
    ----------
    name : str
        Registered model name, or an architecture name with ``checkpoint``.
    checkpoint : str, optional
        Local checkpoint path.
    """

    name: str
    checkpoint: str | None = None

    def weights_sha256(self) -> str:
        """SHA-256 of the weights, without building the network."""
        if self.checkpoint is not None:
            return file_sha256(Path(self.checkpoint))
        spec = get_spec(self.name)
        if spec.sha256:
            return spec.sha256
        path = cached_path(spec)
        if path is None:
            raise ModelNotAvailableError(f"The {spec.title} model is not available.")
        return file_sha256(path)

    def fetch(self, progress: ProgressCallback | None = None) -> ModelRef:
        """Download a registered model's checkpoint now, so that workers find it cached."""
        if self.checkpoint is None:
            spec = get_spec(self.name)
            if spec.url:
                fetch_checkpoint(spec, progress=progress)
        return self

    def model_id(self) -> str:
        """Same value as :attr:`LoadedModel.model_id` of the loaded model."""
        return model_id(self.name, self.weights_sha256())

    def load(self, device: str | torch.device | None = None) -> LoadedModel:
        checkpoint = Path(self.checkpoint) if self.checkpoint is not None else None
        return load_model(self.name, checkpoint, device)


def model_id(name: str, weights_sha256: str) -> str:
    """Identity of a model in embedding signatures: its name and weight hash prefix."""
    return f"{name}@{weights_sha256[:16]}"


def random_model(architecture: Architecture, seed: int = 0) -> LoadedModel:
    """A randomly initialised model of ``architecture`` on the CPU (tests, timing)."""
    torch.manual_seed(seed)
    return LoadedModel(
        sam=architecture.build(),
        name=architecture.name,
        architecture=architecture,
        weights_sha256=f"random-seed-{seed}".ljust(16, "0"),
    )


# ---------------------------------------------------------------------- companion files


def companion_path(checkpoint: Path, kind: str) -> Path:
    """A file fitted for a checkpoint, kept next to it: ``NAME.KIND.pt`` (e.g. its
    Bayesian head, ``kind="head"``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{kind}.pt")


def user_companion_path(model_id: str, kind: str) -> Path:
    """Where a companion the user fitted for a model is kept: the cache, by model id."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_id)
    return cache_dir() / kind / f"{safe}.{kind}.pt"


def shipped_companion_path(ref: ModelRef, kind: str) -> Path:
    """The companion that comes with a model: next to a local checkpoint or the bundled
    file, else beside the downloaded weights in the cache."""
    if ref.checkpoint is not None:
        return companion_path(Path(ref.checkpoint), kind)
    spec = get_spec(ref.name)
    base = bundled_path(spec.bundled) if spec.bundled else cache_dir() / spec.filename
    return companion_path(base, kind)


def companion_candidates(model: LoadedModel, kind: str, checkpoint: Path | None) -> list[Path]:
    """Where to look for a loaded model's companion, in order: the user's own, then the one
    next to ``checkpoint`` or shipped with a registered model."""
    candidates = [user_companion_path(model.model_id, kind)]
    if checkpoint is not None:
        candidates.append(companion_path(Path(checkpoint), kind))
    elif model.name in {m.value for m in ModelName}:
        candidates.append(shipped_companion_path(ModelRef(model.name), kind))
    return candidates


def save_companion(path: Path, kind: str, payload: dict[str, Any]) -> Path:
    """Write a companion file atomically with ``torch.save``, tagged with its ``kind``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({**payload, "kind": f"napari-active-sam {kind}"}, partial)
    partial.replace(path)
    return path


def read_companion(path: Path, kind: str, title: str, remedy: str) -> dict[str, Any]:
    """Read a companion file written by :func:`save_companion`, weights only.

    Raises
    ------
    CheckpointError
        No file, an unreadable one, or one of another kind; the message names ``title``
        (e.g. "Bayesian head") and what to do (``remedy``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No {title} at {path}: {remedy}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets one message
        raise CheckpointError(f"{path} is not a {title} file ({error}): {remedy}.") from None
    if not isinstance(payload, dict) or payload.get("kind") != f"napari-active-sam {kind}":
        raise CheckpointError(f"{path} is not a napari-active-sam {title} file: {remedy}.")
    return payload


def find_companion(model: LoadedModel, kind: str, checkpoint: Path | None) -> Path | None:
    """The first of :func:`companion_candidates` that exists, or None."""
    return next((p for p in companion_candidates(model, kind, checkpoint) if p.is_file()), None)
