"""The GPU path's choices, checked on the CPU: the encoder's precision, resizing on the
device, and results leaving the device in one trip."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from napari_active_sam.core.data.real import nuclei_ihc, photo_coins
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.device import (
    PRECISION_ENV,
    encoder_arithmetic,
    resolve_precision,
    to_device,
    to_host,
)
from napari_active_sam.core.engine.embeddings import SliceEncoder
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.preprocess import to_sam_rgb
from napari_active_sam.core.enums import Precision
from napari_active_sam.core.errors import ActiveSamError, ModelError
from napari_active_sam.core.metrics import iou
from napari_active_sam.core.prompts import Click, PromptSet

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_precision_is_bf16_on_cuda_fp32_elsewhere_unless_asked(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert resolve_precision(None, CUDA) is Precision.BF16
    assert resolve_precision("auto", CPU) is Precision.FP32
    assert resolve_precision("fp32", CUDA) is Precision.FP32
    assert resolve_precision(Precision.BF16, CPU) is Precision.BF16
    monkeypatch.setenv(PRECISION_ENV, "FP32")
    assert resolve_precision(None, CUDA) is Precision.FP32
    with pytest.raises(ActiveSamError, match="Unknown encoder precision 'fp8'.*auto, fp32, bf16"):
        resolve_precision("fp8", CPU)


def test_tf32_is_on_for_bf16_on_cuda_and_restored_after():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with encoder_arithmetic(Precision.FP32, CUDA):
        assert matmul.fp32_precision == "ieee"
    cuda = torch.cuda.is_available()
    no_cuda = contextlib.nullcontext() if cuda else pytest.warns(UserWarning, match="CUDA is not")
    with no_cuda, encoder_arithmetic(Precision.BF16, CUDA):
        assert matmul.fp32_precision == "tf32"
        assert torch.is_autocast_enabled("cuda") == cuda
    assert matmul.fp32_precision == before
    with encoder_arithmetic(Precision.FP32, CPU):
        assert not torch.is_autocast_enabled("cpu")
        assert matmul.fp32_precision == before  # the CPU leaves CUDA's settings alone
    with encoder_arithmetic(Precision.BF16, CPU):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_to_host_and_to_device_do_not_copy_on_the_cpu():
    tensor = torch.arange(6.0)
    (host,) = to_host(tensor)
    assert np.shares_memory(host, tensor.numpy())
    array = np.arange(4.0)
    assert np.shares_memory(to_device(array, CPU).numpy(), array)
    assert to_host() == ()


def _clicked_masks(model, images, encoder: SliceEncoder) -> list[np.ndarray]:
    """The shown mask of one click at the centre of each object of ``images``."""
    predictor = Predictor(model)
    masks = []
    for image in images:
        rgb = to_sam_rgb(image.image, image.window.limits(image.image))
        (embedding,) = encoder.encode([rgb], ["check"])
        for label in np.unique(image.labels)[1:]:
            rows, cols = np.nonzero(image.labels == label)
            middle = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
            click = Click(float(cols[middle]), float(rows[middle]), True)
            masks.append(predictor.predict(embedding, PromptSet((click,))).mask())
    return masks


def test_bf16_and_device_resized_embeddings_give_the_fp32_masks():
    """What a GPU runs by default (bf16 autocast, resizing on the device) against the
    reference (fp32, resized as SamPredictor does), on real images: the masks agree."""
    model = load_model("demo", device="cpu")
    images = [nuclei_ihc("validation")[0], photo_coins("validation")[0]]
    reference = _clicked_masks(model, images, SliceEncoder(model, Precision.FP32))
    assert len(reference) >= 10
    for encoder in (
        SliceEncoder(model, Precision.BF16),
        SliceEncoder(model, Precision.FP32, resize_on_device=True),
        SliceEncoder(model, Precision.BF16, resize_on_device=True),
    ):
        masks = _clicked_masks(model, images, encoder)
        agreement = [iou(a, b) for a, b in zip(masks, reference, strict=True) if b.any()]
        # One faint nucleus of the 54 may flip to a neighbouring answer (IoU 0.69 with bf16 and
        # resizing on the device); the mean says whether the masks agree as a whole.
        assert np.mean(agreement) >= 0.98, (encoder.precision, encoder.resize_on_device)
        assert np.median(agreement) >= 0.99, (encoder.precision, encoder.resize_on_device)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("acquisition", ["bald", "eig", "entropy"])
def test_a_click_on_a_gpu_gives_what_it_gives_on_the_cpu(acquisition):
    """The same embedding and click decoded and judged on CUDA and on the CPU: the same
    mask, acquisition map and suggestions (up to the GPU's arithmetic)."""
    from napari_active_sam.core.active.acquisition import uncertainty
    from napari_active_sam.core.active.bayes_head import BayesHead

    image = nuclei_ihc("validation")[0]
    answers = []
    for device in ("cpu", "cuda"):
        model = load_model("demo", device=device)
        rgb = to_sam_rgb(image.image, image.window.limits(image.image))
        (embedding,) = SliceEncoder(model, Precision.FP32, resize_on_device=False).encode(
            [rgb], ["same"]
        )
        rows, cols = np.nonzero(image.labels == 1)
        prompts = PromptSet((Click(float(np.median(cols)), float(np.median(rows)), True),))
        prediction = Predictor(model).predict(embedding, prompts)
        found = uncertainty(acquisition, prediction, prompts, model, BayesHead.for_model(model),
                            rng=np.random.default_rng(0))  # fmt: skip
        answers.append((prediction.mask(), found))
    (cpu_mask, cpu), (gpu_mask, gpu) = answers
    assert iou(cpu_mask, gpu_mask) >= 0.99
    np.testing.assert_allclose(gpu.probability, cpu.probability, atol=0.02)
    np.testing.assert_allclose(gpu.scores, cpu.scores, atol=0.02 * float(cpu.scores.max()))
    near = [min(np.hypot(g.x - c.x, g.y - c.y) for c in cpu.suggestions) for g in gpu.suggestions]
    assert len(gpu.suggestions) == len(cpu.suggestions) and np.median(near) <= 2.0


def test_a_batch_too_big_for_the_gpu_is_encoded_in_halves(tiny_model):
    """A GPU with memory for two slices at a time: a batch of five still encodes, each
    slice as it would alone."""

    class SmallGpu(SliceEncoder):
        room = 2

        def _encode(self, images, signatures):
            if len(images) > self.room:
                raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({self.room} fit)")
            return super()._encode(images, signatures)

    rng = np.random.default_rng(0)
    images = [to_sam_rgb(rng.random((30 + 4 * i, 40)), (0.0, 1.0)) for i in range(5)]
    names = [f"s{i}" for i in range(5)]
    encoded = SmallGpu(tiny_model).encode(images, names)
    assert [e.signature for e in encoded] == names
    for image, embedding in zip(images, encoded, strict=True):
        (alone,) = SliceEncoder(tiny_model).encode([image], ["alone"])
        torch.testing.assert_close(embedding.features, alone.features, atol=2e-3, rtol=0)
        assert embedding.original_size == image.shape[:2]
    full = SmallGpu(tiny_model)
    full.room = 0  # not even one slice: the error reaches the user
    with pytest.raises(ModelError, match=r"GPU has no room.*0 fit.*NAPARI_ACTIVE_SAM_DEVICE=cpu"):
        full.encode(images, names)
