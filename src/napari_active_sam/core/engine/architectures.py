"""SAM architectures: the official ViT configurations, the small test and demo models, and
the SAM 2 family's (:mod:`~napari_active_sam.core.engine.sam2_family`)."""

from __future__ import annotations

import reprlib
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.common import LayerNorm2d

from ..errors import ModelError
from .sam2_family import SAM2_ARCHITECTURES, Sam2Architecture

MAX_DEPTH = 256
"""Most blocks an encoder or a decoder may have (ViT-H has 32)."""


MAX_PARAMETERS = 1_000_000_000
"""Largest network built, in stored values: SAM ViT-H has 641 million."""


_POSITIVE = (
    "encoder_embed_dim", "encoder_depth", "img_size", "patch_size", "prompt_embed_dim",
    "mask_in_chans", "decoder_depth", "decoder_mlp_dim", "decoder_num_heads",
    "iou_head_hidden_dim",
)  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

    def __post_init__(self):
        if isinstance(self.encoder_global_attn_indexes, list):  # as stored by to_dict
            indexes = tuple(self.encoder_global_attn_indexes)
            object.__setattr__(self, "encoder_global_attn_indexes", indexes)
        problem = self._problem()
        if problem is not None:
            field_name, rule = problem
            value = reprlib.repr(getattr(self, field_name))
            raise ModelError(f"Architecture field {field_name!r} {rule}, got {value}.")

    def _problem(self) -> tuple[str, str] | None:
        """The first field that cannot build a SAM, and the rule it breaks; None if none."""
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("name", "encoder"):
                if not isinstance(value, str) or not value:
                    return item.name, "must be a non-empty string"
            elif item.name == "encoder_global_attn_indexes":
                if not isinstance(value, tuple) or not all(_is_int(i) for i in value):
                    return item.name, "must be a list of whole numbers"
            elif not _is_int(value) or value < (1 if item.name in _POSITIVE else 0):
                kind = "positive" if item.name in _POSITIVE else "non-negative"
                return item.name, f"must be a {kind} whole number"
        if self.encoder not in ("vit", "cnn"):
            return "encoder", "must be 'vit' or 'cnn'"
        for name in ("encoder_depth", "decoder_depth"):
            if getattr(self, name) > MAX_DEPTH:
                return name, f"must be at most {MAX_DEPTH}"
        if self.img_size % self.patch_size:
            return "img_size", f"must be a multiple of patch_size ({self.patch_size})"
        if self.encoder == "cnn" and self.patch_size & (self.patch_size - 1):
            return "patch_size", "must be a power of two for the cnn encoder"
        if self.encoder == "vit":
            if self.encoder_num_heads < 1 or self.encoder_embed_dim % self.encoder_num_heads:
                return "encoder_num_heads", "must be positive and divide encoder_embed_dim"
            if not all(0 <= i < self.encoder_depth for i in self.encoder_global_attn_indexes):
                return "encoder_global_attn_indexes", "must be block numbers below encoder_depth"
        if self.prompt_embed_dim < 8 or self.prompt_embed_dim % (2 * self.decoder_num_heads):
            return "prompt_embed_dim", "must be at least 8 and a multiple of 2 × decoder_num_heads"
        if self.mask_in_chans < 4:
            return "mask_in_chans", "must be at least 4"
        return None

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

    def state_shapes(self) -> dict[str, torch.Size]:
        """Names and shapes of the network's state dict, without allocating its weights.

        The network is built on the ``meta`` device, which records shapes only.

        Raises
        ------
        ModelError
            If the network would hold more than :data:`MAX_PARAMETERS` values.
        """
        try:
            with torch.device("meta"):
                state = self.build().state_dict()
        except (RuntimeError, ValueError, OverflowError) as error:
            raise ModelError(f"Architecture {self.name!r} cannot be built ({error}).") from None
        shapes = {key: tensor.shape for key, tensor in state.items()}
        count = sum(shape.numel() for shape in shapes.values())
        if count > MAX_PARAMETERS:
            raise ModelError(
                f"Architecture {self.name!r} has {count / 1e6:,.0f} million parameters, more "
                f"than the {MAX_PARAMETERS / 1e6:,.0f} million napari-active-sam builds (SAM "
                "ViT-H has 641 million)."
            )
        return shapes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        """The architecture stored by :meth:`to_dict`, every field present and valid.

        Raises
        ------
        ModelError
            A missing, unknown or invalid field, named in the message.
        """
        if not isinstance(data, dict):
            raise ModelError(f"A stored architecture must be a dict, not {type(data).__name__}.")
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if name not in data]
        unknown = [key for key in data if key not in names]
        if missing:
            raise ModelError(f"The stored architecture lacks the fields {', '.join(missing)}.")
        if unknown:
            raise ModelError(f"The stored architecture has unknown fields {reprlib.repr(unknown)}.")
        return cls(**data)


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


def deepened(sam: Sam, architecture: Architecture, depth: int) -> Sam:
    """``sam`` (a ``cnn``-encoder model of ``architecture``) with its image encoder grown to
    ``depth`` residual blocks: the blocks it has keep their weights, and each new one starts
    with its last normalisation at zero, so that its branch adds nothing and training
    continues from about the function ``sam`` computes (each new block's activation is all
    it changes).

    Raises
    ------
    ModelError
        ``architecture`` has no ``cnn`` encoder, or ``depth`` is below its own.
    """
    if architecture.encoder != "cnn" or depth < architecture.encoder_depth:
        raise ModelError(
            f"Only a cnn image encoder grows, to at least its own {architecture.encoder_depth} "
            f"blocks; asked for {depth} blocks of a {architecture.encoder!r} encoder."
        )
    grown = replace(architecture, encoder_depth=depth).build()
    missing, unexpected = grown.load_state_dict(sam.state_dict(), strict=False)
    if unexpected or not all(key.startswith("image_encoder.body.") for key in missing):
        raise ModelError(f"{architecture.name!r} weights do not fit its own deeper encoder.")
    body = grown.image_encoder.body
    for block in list(body)[len(body) - (depth - architecture.encoder_depth):]:
        last_norm = block.body[-1]
        torch.nn.init.zeros_(last_norm.weight)
        torch.nn.init.zeros_(last_norm.bias)
    return grown


AnyArchitecture = Architecture | Sam2Architecture
"""A SAM (segment-anything) or a SAM 2 (sam2) configuration."""


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        Architecture("vit_b", 768, 12, 12, (2, 5, 8, 11)),
        Architecture("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
        Architecture("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    )
}
"""SAM architectures a local checkpoint can name; keys match segment-anything's registry."""


NAMED_ARCHITECTURES: dict[str, AnyArchitecture] = {**ARCHITECTURES, **SAM2_ARCHITECTURES}
"""Every architecture a local checkpoint can name: segment-anything's, then the sam2
package's configurations."""


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


DEMO_ARCHITECTURE = Architecture(
    name="demo",
    encoder="cnn",
    encoder_embed_dim=96,
    encoder_depth=4,
    encoder_num_heads=0,
    encoder_global_attn_indexes=(),
    img_size=256,
    patch_size=8,
    window_size=0,
    prompt_embed_dim=128,
    mask_in_chans=16,
    decoder_depth=2,
    decoder_mlp_dim=512,
    decoder_num_heads=4,
    iou_head_hidden_dim=128,
)
"""The demo model: segment-anything's prompt encoder, mask decoder (three multimask heads
plus the single-mask head) and IoU head, on a small convolutional image encoder; 256 px
input, 32×32 embedding, 128×128 low-resolution masks."""


def resolve_architecture(architecture: str | AnyArchitecture) -> AnyArchitecture:
    if isinstance(architecture, Architecture | Sam2Architecture):
        return architecture
    if architecture in NAMED_ARCHITECTURES:
        return NAMED_ARCHITECTURES[architecture]
    raise ModelError(
        f"Unknown architecture {architecture!r}: use one of {', '.join(NAMED_ARCHITECTURES)}."
    )


def stored_architecture(data: dict[str, Any]) -> AnyArchitecture:
    """The architecture a checkpoint stored with ``to_dict``, of either family.

    Raises
    ------
    ModelError
        A missing, unknown or invalid field, named in the message.
    """
    if isinstance(data, dict) and data.get("family") == "sam2":
        return Sam2Architecture.from_dict(data)
    return Architecture.from_dict(data)
