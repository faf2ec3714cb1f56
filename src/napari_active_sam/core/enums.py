"""The options of every registry, as string enums (importable without torch: the command line
builds its choices from them)."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from .errors import ActiveSamError


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
    SAM2_TINY = "sam2.1_hiera_t"
    """SAM 2.1 Hiera tiny (Ravi et al. 2024), 156 MB; tracks through volumes with a memory.
    SAM 2 models need the ``sam2`` extra."""
    SAM2_SMALL = "sam2.1_hiera_s"
    """SAM 2.1 Hiera small, 184 MB."""
    SAM2_BASE_PLUS = "sam2.1_hiera_b+"
    """SAM 2.1 Hiera base+, 324 MB."""
    SAM2_LARGE = "sam2.1_hiera_l"
    """SAM 2.1 Hiera large, 898 MB."""
    MEDSAM2 = "medsam2"
    """MedSAM2 (Ma et al. 2025): SAM 2.1 tiny at 512 px fine-tuned on 3D CT, MRI and PET
    and on ultrasound and endoscopy videos."""


class WindowKind(StrEnum):
    """How intensities are mapped to 0-255."""

    PERCENTILE = "percentile"
    """Between two percentiles of the data (robust default for any modality)."""
    FIXED = "fixed"
    """Between two fixed values in the data's units (e.g. Hounsfield units)."""


class SceneKind(StrEnum):
    """Kinds of generated scene."""

    CT = "ct"
    """CT-like slice in Hounsfield units."""
    ULTRASOUND = "ultrasound"
    """B-mode-like image with speckle."""
    NUCLEI = "nuclei"
    """Fluorescence microscopy-like nuclei."""
    MIXED = "mixed"
    """Generic shapes on textured backgrounds."""
    RANDOM = "random"
    """Domain randomisation (SynthSeg-style): random label maps with random appearance, for
    training a model that generalises beyond the modality-like kinds."""
    REAL_CROPS = "real-crops"
    """Crops of real images that ship inside installed packages, labelled by fixed rules,
    none of them in the real evaluation set."""


class Precision(StrEnum):
    """The arithmetic the image encoder runs in (stored embeddings are fp16 either way)."""

    AUTO = "auto"
    """bf16 autocast and TF32 matrix products on a CUDA device, fp32 elsewhere."""
    FP32 = "fp32"
    """Full fp32 everywhere (TF32 off): the reference, and the slowest on a GPU."""
    BF16 = "bf16"
    """bf16 autocast on any device (slow on most CPUs; for checking bf16 against fp32)."""


class Acquisition(StrEnum):
    """Registered acquisition functions."""

    BALD = "bald"
    """Mutual information over Laplace posterior samples of the Bayesian head."""
    EIG = "eig"
    """Expected information gain over SAM's three multimask heads (closed form)."""
    ENTROPY = "entropy"
    """Predictive entropy of the mean belief (posterior samples if a head is loaded, else
    SAM's multimask heads)."""
    RANDOM = "random"
    """Uniform scores: the baseline every other function must beat."""


class Source(StrEnum):
    """Where an acquisition function's K probability maps come from."""

    POSTERIOR = "posterior"
    """K samples of the Bayesian head's Laplace posterior on each of SAM's three multimask
    heads, taking turns over them (a head is required)."""
    HEADS = "heads"
    """SAM's three multimask heads as a uniform posterior."""
    ANY = "any"
    """The posterior when a head is loaded, otherwise the multimask heads."""


class HessianStructure(StrEnum):
    """Laplace posterior structures over the final 1×1 convolution."""

    DIAG = "diag"
    KRON = "kron"
    FULL = "full"


class PriorMethod(StrEnum):
    """How the prior precision is chosen."""

    MARGLIK = "marglik"
    """Maximise the Laplace marginal likelihood on the fit pixels."""
    GRIDSEARCH = "gridsearch"
    """Minimise held-out negative log-likelihood over a grid of precisions."""


class Strategy(StrEnum):
    """Registered click strategies."""

    RITM = "ritm"
    """The RITM clicker: the centre of the largest error (a careful annotator)."""
    MICROSAM = "microsam"
    """micro-sam's protocol: a random positive and a random negative per iteration."""
    ORACLE = "oracle"
    """Greedy look-ahead on the ground truth: an upper bound, not a person."""
    BALD = "bald"
    """BALD over the Bayesian head's posterior samples; answered from ground truth."""
    EIG = "eig"
    """Expected information gain over SAM's multimask heads; answered from ground truth."""
    ENTROPY = "entropy"
    """Predictive entropy of the heads' mean; answered from ground truth."""
    RANDOM = "random"
    """A uniformly random pixel, answered from ground truth."""


class Protocol(StrEnum):
    """How the benchmark annotates an object."""

    TWO_D = "2d"
    """Clicks on one slice (the object's largest), scored in 2D (RITM, micro-sam)."""
    THREE_D = "3d"
    """A box or click on the largest slice, propagation, then corrections at the centre
    of the largest 3D error, scored in 3D (Dice and surface Dice per interaction)."""


class Estimator(StrEnum):
    """Ground-truth-free estimators of a mask's Dice."""

    IOU_HEAD = "iou_head"
    """SAM's IoU head, times the mask's agreement with SAM's answer, as Dice."""
    POSTERIOR = "posterior"
    """Expected Dice against masks sampled from the Bayesian head's posterior."""
    REGRESSOR = "regressor"
    """EvanySeg: a small CNN on the image crop with the mask in the red channel."""
    EMBEDDING = "embedding"
    """A small MLP on SAM's embedding pooled inside and around the mask."""
    ENSEMBLE = "ensemble"
    """The mean of the four above, of those the models can answer with."""


Option = TypeVar("Option", bound=StrEnum)


def parse_option(kind: type[Option], value: str, what: str) -> Option:
    """The member of ``kind`` named ``value``; a clear error naming ``what`` (e.g. "quality
    estimator") and the choices for an unknown name.

    Raises
    ------
    ActiveSamError
        No member has that value.
    """
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise ActiveSamError(f"Unknown {what} {value!r}: use {choices}.") from None
