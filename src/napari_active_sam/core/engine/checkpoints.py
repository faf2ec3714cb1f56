"""Checkpoints: device choice, secure loading, and models by name (downloaded on first use).

A *model* is a named set of weights (``vit_b``, ``medsam``, ``demo`` ...); an *architecture*
is the segment-anything configuration those weights fit. Every checkpoint is read with
``torch.load(..., weights_only=True)``; downloads are checked against a published SHA-256."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from segment_anything.modeling import (
    Sam,
)

from ..errors import CheckpointError, ModelError, ModelNotAvailableError
from ..keeping import written_whole
from .architectures import (
    NAMED_ARCHITECTURES,
    AnyArchitecture,
    resolve_architecture,
    stored_architecture,
)
from .device import choose_device
from .downloads import ProgressCallback, bundled_path, cached_path, fetch_checkpoint
from .registry import MODELS, get_spec, model_names
from .sam2_family import Sam2Architecture, require_sam2, sam2_installed

if TYPE_CHECKING:
    from .sam2_network import Sam2Network

CHECKPOINT_FORMAT = "napari-active-sam/1"
"""Tag of checkpoints written by this project (they carry their architecture)."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(eq=False)
class LoadedModel:
    """A SAM network on a device, with what identifies its weights.

    Attributes
    ----------
    sam : Sam or Sam2Network
        segment-anything's model, or SAM 2's network, in eval mode.
    name : str
        Registry name, or the architecture name for a local checkpoint.
    architecture : Architecture or Sam2Architecture
        The configuration ``sam`` was built from.
    weights_sha256 : str
        SHA-256 of the checkpoint file ("random" for untrained test models).
    """

    sam: Sam | Sam2Network
    name: str
    architecture: AnyArchitecture
    weights_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def embed_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed ``(B, 3, S, S)`` images (``sam.preprocess``) → ``(B, C, g, g)``
        embeddings: SAM's image encoder, or SAM 2's packed features
        (:mod:`~napari_active_sam.core.engine.sam2_network`)."""
        if self.is_sam2:
            return self.sam.embed_images(batch)
        return self.sam.image_encoder(batch)

    @property
    def is_sam2(self) -> bool:
        """Whether this is a SAM 2 model (it tracks through volumes with a memory)."""
        return isinstance(self.architecture, Sam2Architecture)

    @property
    def model_id(self) -> str:
        """Short identity used in embedding signatures: name plus weight hash prefix."""
        return model_id(self.name, self.weights_sha256)

    @property
    def encoder_id(self) -> str:
        """Identity of the image encoder's weights, which embeddings depend on
        (:func:`encoder_identity`), or the base model's for a model adapted without touching
        its encoder (its cached embeddings stay valid)."""
        return str(self.extra.get("encoder_id", encoder_identity(self.weights_sha256)))

    def to(self, device: torch.device | str) -> LoadedModel:
        self.sam.to(device)
        return self


def load_weights_only(path: Path, what: str, remedy: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure a plain message.

    Parameters
    ----------
    path : Path
        The file to read.
    what : str
        What the file should be, for messages ("a PyTorch checkpoint").
    remedy : str
        What the user can do about it, ending every message.

    Raises
    ------
    CheckpointError
        If the file is not a readable PyTorch file, or holds Python objects beyond tensors
        (which are never loaded: unpickling them could run code).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip, EOF and runtime errors here
        if refused := _refused_objects(path, exc):
            raise CheckpointError(
                f"{path} holds Python objects beyond tensors ({', '.join(refused[:3])}); "
                f"napari-active-sam does not load such files. {remedy}."
            ) from None
        if isinstance(exc, pickle.UnpicklingError):
            detail = "its data is not a valid pickle"
        else:
            lines = _ANSI.sub("", str(exc)).strip().splitlines()
            detail = f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}"
        raise CheckpointError(
            f"{path} could not be read as {what} ({detail}). The file may be truncated or "
            f"damaged. {remedy}."
        ) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _refused_objects(path: Path, error: Exception) -> list[str]:
    """Names of the Python objects that ``weights_only`` loading refused in ``path``."""
    if not isinstance(error, pickle.UnpicklingError):
        return []
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch 2.5
    if finder is not None:
        with contextlib.suppress(Exception):  # a file that is not a zip checkpoint
            if names := finder(path):
                return list(names)
    return re.findall(r"GLOBAL ([\w.]+)", str(error))


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint safely and return ``(state_dict, metadata)``.

    Accepts a bare state dict (the official SAM and MedSAM files), a dict with a ``model``
    or ``state_dict`` entry, and this project's format, which also stores the architecture.

    Raises
    ------
    CheckpointError
        If the file is missing, is not a PyTorch checkpoint, is truncated, or holds Python
        objects beyond tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist: check the path.")
    payload = load_weights_only(
        path,
        "a PyTorch checkpoint",
        "Download it again from a trusted source, or re-save it with save_checkpoint",
    )
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path} holds a {type(payload).__name__}, not a state dict: it is not a SAM "
            "checkpoint."
        )
    kind = payload.get("kind")
    if isinstance(kind, str) and kind.startswith("napari-active-sam "):  # a companion file
        what = kind.removeprefix("napari-active-sam ")
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise CheckpointError(
            f"{path} is {article} {what} file (for model {payload.get('model_id', '?')}), not "
            "a model checkpoint: give the model's checkpoint here, and this file where "
            f"{article} {what} is asked for."
        )
    metadata: dict[str, Any] = {}
    if payload.get("format") == CHECKPOINT_FORMAT:
        metadata = {k: v for k, v in payload.items() if k != "state_dict"}
        payload = payload.get("state_dict")
        if not isinstance(payload, dict):
            raise CheckpointError(f"{path} has no state dict of weights: it is damaged. "
                                  "Download or save it again.")  # fmt: skip
    else:
        for key in ("model", "state_dict"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise CheckpointError(f"{path} is a dict but not a state dict of tensors.")
    return payload, metadata


def save_checkpoint(
    path: Path,
    sam: Sam,
    architecture: AnyArchitecture,
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

    def write(partial: Path) -> None:  # a failed write leaves the old file
        try:
            torch.save(payload, partial)
        except RuntimeError as exc:  # torch's word for a file it cannot open
            raise OSError(f"cannot write {path}: {exc}") from exc

    written_whole(write, path)
    return file_sha256(path)


def _differences(state: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> str:
    """How a state dict differs from the expected keys and shapes; empty if it fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        return (
            f"{len(missing)} missing keys (first: {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})"
        )
    for key, shape in expected.items():
        if state[key].shape != shape:
            return f"{key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}"
    return ""


def _check_fits(
    state: dict[str, torch.Tensor], arch: AnyArchitecture, path: Path, metadata: dict[str, Any]
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has ``arch``'s keys and shapes.

    A SAM architecture is compared as a meta-device build, so nothing is allocated for an
    oversized one or a file that does not fit; SAM 2's modules read values while they are
    built, so those are built on the CPU (once per architecture). The message names every
    official architecture of the family the file fits.
    """
    try:
        differences = _differences(state, arch.state_shapes())
    except ModelError as error:
        raise _unbuildable(path, error) from None
    if not differences:
        return
    fits = [
        name
        for name, other in _comparable(arch, state).items()
        if other != arch and not _differences(state, other.state_shapes())
    ]
    if fits:
        advice = f"It is a {' or '.join(fits)} checkpoint: choose {fits[0]}."
    elif isinstance(stored := metadata.get("architecture"), dict):
        advice = (
            f"It names its own architecture ({reprlib.repr(stored.get('name'))}): choose "
            "that one, or name none and the file's is used."
        )
    else:
        advice = (
            f"It fits none of {', '.join(_comparable(arch, state)) or arch.name}: choose the "
            "architecture the checkpoint was trained with."
        )
    raise CheckpointError(
        f"{path} does not fit the {arch.name!r} architecture: {differences}. {advice}"
    )


FAMILY_MARKERS = {"memory_attention.": True, "image_encoder.patch_embed.": False}
"""Starts of keys that tell a state dict's family: SAM 2's memory attention (True), SAM's
ViT patch embedding (False)."""


def _comparable(
    arch: AnyArchitecture, state: dict[str, torch.Tensor] | None = None
) -> dict[str, AnyArchitecture]:
    """The named architectures a file that does not fit ``arch`` is compared with: those of
    the family ``state`` shows it belongs to (a SAM 2 file given for a SAM architecture is
    compared with SAM 2's, and the other way round), else of ``arch``'s; SAM 2's only
    where the sam2 package is installed."""
    sam2 = isinstance(arch, Sam2Architecture)
    shown = {family for key in state or () for marker, family in FAMILY_MARKERS.items()
             if key.startswith(marker)}  # fmt: skip
    if len(shown) == 1:
        (sam2,) = shown
    if sam2 and not sam2_installed():
        return {}
    return {
        name: other
        for name, other in NAMED_ARCHITECTURES.items()
        if isinstance(other, Sam2Architecture) == sam2
    }


def _stored_architecture(path: Path, metadata: dict[str, Any]) -> AnyArchitecture:
    """The architecture a file written by :func:`save_checkpoint` carries, checked."""
    if "architecture" not in metadata:
        raise CheckpointError(
            f"{path} does not say which architecture it is for: name one of "
            f"{', '.join(NAMED_ARCHITECTURES)}."
        )
    try:
        return stored_architecture(metadata["architecture"])
    except ModelError as error:
        raise _unbuildable(path, error) from None


def _unbuildable(path: Path, error: ModelError) -> CheckpointError:
    return CheckpointError(
        f"{path} is for an architecture napari-active-sam does not build: {error} The file "
        "is damaged or was not written by napari-active-sam: re-save it with "
        f"save_checkpoint, or name its architecture ({', '.join(NAMED_ARCHITECTURES)})."
    )


def load_checkpoint(
    path: Path,
    architecture: str | AnyArchitecture | None = None,
    device: str | torch.device | None = None,
    name: str | None = None,
    sha256: str | None = None,
) -> LoadedModel:
    """Build an architecture and load a local checkpoint into it.

    The file's keys and shapes are checked against the architecture before the network is
    built, so a file that does not fit is refused at once.

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

    Raises
    ------
    CheckpointError
        If the file cannot be read, stores an invalid or oversized architecture, or does not
        fit the architecture.
    """
    path = Path(path)
    state, metadata, arch = check_checkpoint(path, architecture)
    sam = arch.build()
    sam.load_state_dict(state)
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
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"The checkpoint {checkpoint} is not a file: choose the "
                                  "model's checkpoint file (.pt or .pth).")  # fmt: skip
        arch = _named_architecture(name)
        sha256 = file_sha256(Path(checkpoint))
        _check_registered_weights(Path(checkpoint), sha256, arch)
        return load_checkpoint(checkpoint, arch, device, name, sha256)
    spec = get_spec(name)
    _require_package(spec.architecture)
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


def _require_package(architecture: str) -> None:
    """Say what to install for a SAM 2 architecture before anything is downloaded."""
    if isinstance(NAMED_ARCHITECTURES.get(architecture), Sam2Architecture):
        require_sam2()


def _check_registered_weights(path: Path, sha256: str, architecture: str | None) -> None:
    """Refuse a file whose hash is a registered model's when another architecture is named:
    shapes cannot tell some apart (SAM 2.1 tiny and MedSAM2, at 1024 and 512 px)."""
    for spec in MODELS.values():
        if spec.sha256 == sha256 and architecture not in (None, spec.architecture):
            raise CheckpointError(
                f"{path} holds the {spec.title} weights, whose architecture is "
                f"{spec.architecture}, not {architecture}: load it as {spec.name}."
            )


def _named_architecture(name: str) -> str | None:
    """The architecture ``name`` stands for with a local checkpoint (None: the file's own)."""
    arch = None  # files written by this project carry their architecture
    if name in model_names():
        arch = get_spec(name).architecture
    elif name in NAMED_ARCHITECTURES:
        arch = name
    return arch if arch in NAMED_ARCHITECTURES else None


def check_checkpoint(
    path: Path, architecture: str | AnyArchitecture | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any], AnyArchitecture]:
    """Read a local checkpoint and check it fits its architecture, building nothing; return
    ``(state_dict, metadata, architecture)``.

    ``architecture`` is required unless the file was written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        As :func:`load_checkpoint` would, but without the cost of building the network.
    """
    path = Path(path)
    state, metadata = read_checkpoint(path)
    if architecture is None:
        arch = _stored_architecture(path, metadata)
    else:
        arch = resolve_architecture(architecture)
    if isinstance(arch, Sam2Architecture):
        require_sam2()
    _check_fits(state, arch, path, metadata)
    return state, metadata, arch


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
        """Download a registered model's checkpoint now, so that workers find it cached, or
        check a local checkpoint now, so that a bad file is found before workers start.

        Raises
        ------
        CheckpointError
            A local checkpoint that cannot be read or does not fit its architecture.
        """
        if self.checkpoint is not None:
            check_checkpoint(Path(self.checkpoint), _named_architecture(self.name))
        else:
            spec = get_spec(self.name)
            _require_package(spec.architecture)
            if spec.url:
                fetch_checkpoint(spec, progress=progress)
        return self

    def model_id(self) -> str:
        """Same value as :attr:`LoadedModel.model_id` of the loaded model."""
        return model_id(self.name, self.weights_sha256())

    def encoder_id(self) -> str:
        """Same value as :attr:`LoadedModel.encoder_id` of the loaded model."""
        return encoder_identity(self.weights_sha256())

    def load(self, device: str | torch.device | None = None) -> LoadedModel:
        checkpoint = Path(self.checkpoint) if self.checkpoint is not None else None
        return load_model(self.name, checkpoint, device)


def model_id(name: str, weights_sha256: str) -> str:
    """Identity of a model in embedding signatures: its name and weight hash prefix."""
    return f"{name}@{weights_sha256[:16]}"


def encoder_identity(weights_sha256: str) -> str:
    """Identity of the embeddings a model's image encoder makes: its weights' hash prefix.
    The name a model is chosen by does not change them, so one checkpoint file named on the
    command line (``precompute --model vit_b --checkpoint f``) and chosen as a local file in
    the dock shares one embedding store."""
    return f"weights@{weights_sha256[:16]}"


def random_model(architecture: AnyArchitecture, seed: int = 0) -> LoadedModel:
    """A randomly initialised model of ``architecture`` on the CPU (tests, timing)."""
    torch.manual_seed(seed)
    return LoadedModel(
        sam=architecture.build(),
        name=architecture.name,
        architecture=architecture,
        # Unique per architecture and seed: two random models never share embeddings.
        weights_sha256=hashlib.sha256(f"random {architecture!r} {seed}".encode()).hexdigest(),
    )
