"""SAM 2's network, decoding from this package's embedding store: images and volumes.

Imported only when a SAM 2 model is built (the ``sam2`` package is an optional extra).

One slice's embedding is one ``(C, g, g)`` tensor, as for SAM: SAM 2's image embedding
(``d`` channels, ``g × g``) followed by the mask decoder's two high-resolution feature maps
(after its ``conv_s1`` and ``conv_s0``: ``d/4`` channels at ``2g`` and ``d/8`` at ``4g``),
folded onto the ``g × g`` grid by :func:`torch.nn.functional.pixel_unshuffle` — lossless, so
the :class:`~napari_active_sam.core.engine.store.EmbeddingStore`, its signatures and checksums
hold SAM 2's embeddings unchanged (``C = 4d``: 1,024 channels for the official models).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from sam2.sam2_video_predictor import SAM2VideoPredictor

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
"""SAM 2 normalises with ImageNet's statistics, SAM's own on 0-255 pixels."""


@dataclass(frozen=True)
class Heads:
    """What SAM 2's heads said on the last frame it tracked.

    Attributes
    ----------
    multimask_logits : torch.Tensor
        ``(3, g4, g4)`` logits of the three multimask heads (1 × when SAM 2 chose one mask).
    chosen_logits : torch.Tensor
        ``(g4, g4)`` logits of the mask SAM 2 kept.
    ious : torch.Tensor
        Predicted IoU of each multimask head.
    object_score : float
        Logit of the object-score head: the object is on the slice when positive.
    """

    multimask_logits: torch.Tensor
    chosen_logits: torch.Tensor
    ious: torch.Tensor
    object_score: float


class Sam2Network(SAM2VideoPredictor):
    """SAM 2 (``SAM2VideoPredictor``) with the interface the engine decodes through.

    - :meth:`embed_images` and :meth:`preprocess` encode slices into packed embeddings;
    - :attr:`prompt_encoder` and :attr:`mask_decoder` decode them as SAM's are decoded
      (:class:`BoxesAsCorners`, :class:`PackedDecoder`: all four heads and their predicted
      IoUs);
    - :meth:`volume_state` starts video tracking over a volume whose slices' embeddings come
      from a callable (the store) instead of video frames; :attr:`last_heads` is what the
      heads said on the frame tracked last.

    The state dict is SAM 2's own: official checkpoints load into it unchanged.
    """

    @property
    def last_heads(self) -> Heads | None:
        """What the heads said on the frame this thread tracked last (None before any)."""
        return self.__dict__.get("_heads_by_thread", {}).get(threading.get_ident())

    @property
    def prompt_encoder(self) -> BoxesAsCorners:
        return BoxesAsCorners(self.sam_prompt_encoder)

    @property
    def mask_decoder(self) -> PackedDecoder:
        return PackedDecoder(self)

    @property
    def img_size(self) -> int:
        return int(self.image_size)

    def preprocess(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` pixels in 0-255 → normalised and zero-padded to the input."""
        mean = torch.tensor(PIXEL_MEAN, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(PIXEL_STD, device=pixels.device).view(-1, 1, 1)
        pixels = (pixels - mean) / std
        height, width = pixels.shape[-2:]
        return F.pad(pixels, (0, self.img_size - width, 0, self.img_size - height))

    def embed_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed ``(B, 3, S, S)`` images → packed ``(B, C, g, g)`` embeddings."""
        fpn = self.forward_image(batch)["backbone_fpn"]
        return torch.cat(
            [fpn[2], F.pixel_unshuffle(fpn[1], 2), F.pixel_unshuffle(fpn[0], 4)], dim=1
        )

    def unpack(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Packed ``(B, C, g, g)`` → ``[s0, s1, embedding]`` as ``forward_image`` gives them."""
        decoder = self.sam_mask_decoder
        d = decoder.transformer_dim
        c1, c0 = decoder.conv_s1.out_channels, decoder.conv_s0.out_channels
        if packed.shape[1] != d + 4 * c1 + 16 * c0:
            raise ValueError(
                f"A SAM 2 embedding of this model has {d + 4 * c1 + 16 * c0} channels, "
                f"not {packed.shape[1]}."
            )
        embedding = packed[:, :d]
        s1 = F.pixel_shuffle(packed[:, d : d + 4 * c1], 2)
        s0 = F.pixel_shuffle(packed[:, d + 4 * c1 :], 4)
        return [s0, s1, embedding]

    def _forward_sam_heads(self, *args: Any, **kwargs: Any):
        out = super()._forward_sam_heads(*args, **kwargs)
        multimask, _, ious, chosen, _, _, object_score = out
        heads = self.__dict__.setdefault("_heads_by_thread", {})
        heads[threading.get_ident()] = Heads(
            multimask[0].detach(), chosen[0, 0].detach(), ious[0].detach(),
            float(object_score.reshape(-1)[0]),
        )  # fmt: skip
        return out

    def volume_state(
        self, depth: int, features: Callable[[int], torch.Tensor]
    ) -> dict[str, Any]:
        """A video-tracking state over ``depth`` slices, read through ``features``.

        Parameters
        ----------
        depth : int
            Slices of the volume.
        features : callable
            Slice index → its packed ``(1, C, g, g)`` embedding on this network's device.

        Masks added to the state and the masks tracked are on the padded model input
        (``S × S``): the caller crops and resizes them, as for every SAM answer.
        """
        grid = self.img_size // 4  # sam2 resizes its output to this: kept as decoded
        storage = self.device
        state: dict[str, Any] = {
            "images": None,  # never read: frames come from ``features``
            "num_frames": depth,
            "offload_video_to_cpu": False,
            "offload_state_to_cpu": False,
            "video_height": grid,
            "video_width": grid,
            "device": self.device,
            "storage_device": storage,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
            "stored_features": features,
        }
        return state

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        cached = inference_state["cached_features"]
        if frame_idx not in cached and "stored_features" in inference_state:
            packed = inference_state["stored_features"](frame_idx)
            fpn = self.unpack(packed)
            encode = self.image_encoder.neck.position_encoding
            positions = [encode(level).to(level.dtype) for level in fpn]
            placeholder = packed.new_zeros((1, 3, 1, 1))  # the frame's pixels are not kept
            inference_state["cached_features"] = {
                frame_idx: (placeholder, {"backbone_fpn": fpn, "vision_pos_enc": positions})
            }
        return super()._get_image_feature(inference_state, frame_idx, batch_size)


class BoxesAsCorners:
    """SAM 2's prompt encoder, given a box as SAM 2's own predictors give it: as its two
    corners (point labels 2 and 3) ahead of the clicks, which keeps the padding point that
    SAM 2 was trained with. Called as SAM's prompt encoder is."""

    def __init__(self, encoder: torch.nn.Module):
        self.encoder = encoder

    def get_dense_pe(self) -> torch.Tensor:
        return self.encoder.get_dense_pe()

    def __call__(self, points, boxes, masks):
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device)
            labels = labels.expand(corners.shape[0], -1)
            if points is not None:
                corners = torch.cat([corners, points[0]], dim=1)
                labels = torch.cat([labels, points[1]], dim=1)
            points = (corners, labels)
        return self.encoder(points=points, boxes=None, masks=masks)


class PackedDecoder:
    """SAM 2's mask decoder over packed embeddings, answering as SAM's ``predict_masks``.

    Parameters
    ----------
    network : Sam2Network
    """

    def __init__(self, network: Sam2Network):
        self.network = network

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 4, h, w)`` low-resolution logits (the single-mask head first) and
        ``(B, 4)`` predicted IoUs.

        One embedding serves every prompt set (as SAM's decoder does), or there is one
        embedding per prompt set. As ``SAM2ImagePredictor`` does, the "no memory" embedding
        is added to the image embedding (a lone image has no memory of other frames).
        """
        network = self.network
        s0, s1, embedding = network.unpack(image_embeddings)
        if network.directly_add_no_mem_embed:
            embedding = embedding + network.no_mem_embed.view(1, -1, 1, 1)
        prompts = sparse_prompt_embeddings.shape[0]
        repeat = embedding.shape[0] != prompts
        if repeat:
            s0, s1 = (level.expand(prompts, -1, -1, -1) for level in (s0, s1))
        masks, iou, _, _ = network.sam_mask_decoder.predict_masks(
            image_embeddings=embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            repeat_image=repeat,
            high_res_features=[s0, s1],
        )
        return masks, iou
