"""SAM 2 architectures: the ``sam2`` package's own configurations, built with its modules.

SAM 2 (Ravi et al. 2024) is an optional extra (``pip install "napari-active-sam[sam2]"``);
nothing here imports ``sam2`` until a network is built. A configuration is one of the
package's YAML files (or a file of the user's) plus dotted overrides, read with OmegaConf
and instantiated as :class:`~napari_active_sam.core.engine.sam2_network.Sam2Network`.

Slices are resized and padded for SAM 2 as for SAM (longest side to the input, zero padding
at the bottom and right), so one cached embedding serves clicks and volume tracking alike;
``SAM2ImagePredictor`` stretches a slice to the square input instead, which is the same for
the square slices of most CT and MRI series.
"""

from __future__ import annotations

import functools
import reprlib
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ModelError

if TYPE_CHECKING:
    from .sam2_network import Sam2Network

SAM2_EXTRA = 'SAM2_BUILD_CUDA=0 pip install --no-build-isolation "napari-active-sam[sam2]"'
"""How to install SAM 2: its package is published as source, and would otherwise try to
compile its optional CUDA extension and download another PyTorch to build with."""

_NETWORK = "napari_active_sam.core.engine.sam2_network.Sam2Network"

_VIDEO_SETTINGS = (
    # as sam2's video predictor builder sets it: the memory encoder sees the binarised
    # mask the user saw after clicks
    "model.binarize_mask_from_pts_for_mem_enc=true",
    # the builder fills small holes with a CUDA kernel this package does not build
    "model.fill_hole_area=0",
    # no positional encodings made ahead on a CUDA device the model may not use
    "model.image_encoder.neck.position_encoding.warmup_cache=false",
    "model.memory_encoder.position_encoding.warmup_cache=false",
)

_MODULES = "sam2.modeling."
"""Every class a configuration may name besides the network itself: SAM 2's modules. A
checkpoint stores its architecture, so this keeps a file from naming anything else for
hydra to call."""


def sam2_installed() -> bool:
    """Whether the ``sam2`` package can be imported."""
    try:
        import sam2  # noqa: F401
    except ImportError:
        return False
    return True


def require_sam2() -> None:
    """Raise :class:`ModelError` naming the install command unless ``sam2`` imports."""
    if not sam2_installed():
        raise ModelError(f"SAM 2 models need the sam2 package: {SAM2_EXTRA}.")


@dataclass(frozen=True)
class Sam2Architecture:
    """A SAM 2 configuration: a YAML file of the ``sam2`` package (or a path) and overrides.

    Attributes
    ----------
    name : str
    config : str
        A path inside the ``sam2`` package (``configs/sam2.1/sam2.1_hiera_t.yaml``) or a
        file's path.
    img_size : int
        The square input side; the configuration's image size and its memory attention's
        feature sizes are set from it.
    overrides : tuple of str
        Dotted ``key=value`` settings applied over the file (``model.num_maskmem=3``).
    """

    name: str
    config: str
    img_size: int = 1024
    overrides: tuple[str, ...] = ()
    family: str = "sam2"

    def __post_init__(self):
        if isinstance(self.overrides, list):  # as stored by to_dict
            object.__setattr__(self, "overrides", tuple(self.overrides))
        for item in ("name", "config"):
            if not isinstance(getattr(self, item), str) or not getattr(self, item):
                raise ModelError(f"Architecture field {item!r} must be a non-empty string.")
        size = self.img_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 64 or size % 16:
            raise ModelError(
                f"Architecture field 'img_size' must be a multiple of 16 of at least 64, got "
                f"{reprlib.repr(size)}."
            )
        if not all(isinstance(o, str) and "=" in o for o in self.overrides):
            raise ModelError("Architecture field 'overrides' must hold 'key=value' strings.")
        if self.family != "sam2":
            raise ModelError(f"Architecture field 'family' must be 'sam2', got {self.family!r}.")

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding (64 for 1024 px input)."""
        return self.img_size // 16

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask grid (256 for 1024 px input)."""
        return 4 * self.embedding_size

    def _config(self) -> Any:
        require_sam2()
        from omegaconf import OmegaConf

        path = Path(self.config)
        if not path.is_file():
            path = Path(str(resources.files("sam2").joinpath(self.config)))
        if not path.is_file():
            raise ModelError(
                f"SAM 2 configuration {self.config!r} is neither a file nor one of the sam2 "
                "package's configurations (configs/sam2.1/sam2.1_hiera_t.yaml, ...)."
            )
        grid = self.embedding_size
        settings = [
            f"model._target_={_NETWORK}",
            f"model.image_size={self.img_size}",
            f"model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
            f"model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
            *_VIDEO_SETTINGS,
            *self.overrides,
        ]
        try:
            config = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(settings))
            OmegaConf.resolve(config)
            model = OmegaConf.to_container(config.model)
        except Exception as error:  # omegaconf's and yaml's own errors
            raise ModelError(
                f"SAM 2 configuration {self.config!r} cannot be read: {error}"
            ) from None
        if problem := _foreign_call(model, root=True):
            raise ModelError(
                f"SAM 2 configuration {self.config!r} (with its overrides) {problem}: "
                "napari-active-sam builds only SAM 2's own modules."
            )
        return config.model

    def build(self) -> Sam2Network:
        """Return a randomly initialised SAM 2 network in eval mode."""
        from hydra.utils import instantiate

        config = self._config()
        try:
            network = instantiate(config, _recursive_=True)
        except Exception as error:  # hydra wraps what the modules raise
            raise ModelError(f"Architecture {self.name!r} cannot be built ({error}).") from None
        return network.eval()

    def state_shapes(self) -> dict[str, torch.Size]:
        """Names and shapes of the network's state dict (SAM 2's modules read values while
        they are built, so this builds one on the CPU, once per architecture)."""
        return dict(_state_shapes(self))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["overrides"] = list(self.overrides)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sam2Architecture:
        """The architecture stored by :meth:`to_dict`.

        Raises
        ------
        ModelError
            A missing, unknown or invalid field, named in the message.
        """
        names = [item.name for item in fields(cls)]
        unknown = [key for key in data if key not in names]
        if unknown:
            raise ModelError(f"The stored architecture has unknown fields {reprlib.repr(unknown)}.")
        missing = [name for name in ("name", "config") if name not in data]
        if missing:
            raise ModelError(f"The stored architecture lacks the fields {', '.join(missing)}.")
        return cls(**data)


def _foreign_call(node: Any, root: bool = False) -> str:
    """What in a configuration would make hydra call something other than SAM 2's modules
    (another target, positional arguments, partial or converted calls); "" if nothing."""
    if isinstance(node, list):
        return next((found for item in node if (found := _foreign_call(item))), "")
    if not isinstance(node, dict):
        return ""
    for key, value in node.items():
        if key == "_target_":
            allowed = value == _NETWORK if root else str(value).startswith(_MODULES)
            if not allowed:
                return f"names {reprlib.repr(value)} to build"
        elif str(key).startswith("_"):
            return f"sets {key!r}"
        elif found := _foreign_call(value):
            return found
    return ""


@functools.cache
def _state_shapes(architecture: Sam2Architecture) -> tuple[tuple[str, torch.Size], ...]:
    state = architecture.build().state_dict()
    return tuple((key, tensor.shape) for key, tensor in state.items())


SAM2_ARCHITECTURES: dict[str, Sam2Architecture] = {
    arch.name: arch
    for arch in (
        Sam2Architecture("sam2.1_hiera_t", "configs/sam2.1/sam2.1_hiera_t.yaml"),
        Sam2Architecture("sam2.1_hiera_s", "configs/sam2.1/sam2.1_hiera_s.yaml"),
        Sam2Architecture("sam2.1_hiera_b+", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
        Sam2Architecture("sam2.1_hiera_l", "configs/sam2.1/sam2.1_hiera_l.yaml"),
        # MedSAM2 (Ma et al. 2025): SAM 2.1 tiny at 512 px (its repository's
        # sam2.1_hiera_t512.yaml differs from the tiny configuration only there)
        Sam2Architecture("sam2.1_hiera_t512", "configs/sam2.1/sam2.1_hiera_t.yaml", 512),
    )
}
"""SAM 2 architectures a local checkpoint can name."""


SMOKE_SAM2_ARCHITECTURE = Sam2Architecture(
    name="tiny-sam2",
    config="configs/sam2.1/sam2.1_hiera_t.yaml",
    img_size=128,
    overrides=(
        "model.image_encoder.trunk.embed_dim=16",
        "model.image_encoder.trunk.stages=[1,1,2,1]",
        "model.image_encoder.trunk.global_att_blocks=[3]",
        "model.image_encoder.trunk.window_spec=[4,4,4,2]",
        "model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
        "model.image_encoder.neck.d_model=32",
        "model.image_encoder.neck.position_encoding.num_pos_feats=32",
        "model.memory_attention.d_model=32",
        "model.memory_attention.num_layers=1",
        "model.memory_attention.layer.d_model=32",
        "model.memory_attention.layer.dim_feedforward=64",
        "model.memory_attention.layer.self_attention.embedding_dim=32",
        "model.memory_attention.layer.cross_attention.embedding_dim=32",
        "model.memory_attention.layer.cross_attention.kv_in_dim=16",
        "model.memory_encoder.in_dim=32",
        "model.memory_encoder.out_dim=16",
        "model.memory_encoder.position_encoding.num_pos_feats=16",
        "model.memory_encoder.fuser.layer.dim=32",
        "model.memory_encoder.mask_downsampler.embed_dim=32",
    ),
)
"""A SAM 2.1 small enough for tests and timing on a CPU: the package's tiny configuration
with a 128 px input, one block per Hiera stage (two in the third) and 32 channels; the
package's own modules, image and memory paths alike (about a million parameters)."""
