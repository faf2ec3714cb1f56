"""The interactive training recipe on a tiny SAM: losses, clicks and a real improvement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_active_sam.core.models import LoadedModel, load_checkpoint
from napari_active_sam.core.training import (
    DemoTrainingConfig,
    SceneBank,
    dice_loss,
    error_click,
    focal_loss,
    interactive_step,
    train_demo_model,
)


def test_losses_are_small_for_right_and_large_for_wrong_logits():
    target = torch.zeros(1, 8, 8)
    target[:, 2:6, 2:6] = 1
    right, wrong = (target * 2 - 1) * 10, (1 - target * 2) * 10
    assert focal_loss(right, target).item() < 1e-4 < focal_loss(wrong, target).item()
    assert dice_loss(right, target).item() < 0.01 and dice_loss(wrong, target).item() > 0.9


def test_error_click_lands_in_the_error_region_with_the_right_sign():
    rng = np.random.default_rng(0)
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    pred = np.zeros_like(gt)
    pred[5:15, 5:10] = True
    pred[0:3, 0:3] = True
    for _ in range(20):
        row, col, positive = error_click(gt, pred, np.zeros_like(gt), rng)
        assert (gt ^ pred)[row, col] and positive == gt[row, col]


def test_interactive_step_backpropagates_into_every_part(tiny_arch):
    rng = np.random.default_rng(0)
    bank = SceneBank.generate(2, rng, tiny_arch.img_size, "nuclei")
    sam = tiny_arch.build().train()
    model = LoadedModel(sam, "tiny", tiny_arch, "x")
    pairs = [bank.sample_target(i, rng) for i in range(2)]
    targets = np.stack([t for t, _ in pairs])
    regions = np.stack([r for _, r in pairs])
    for use_box in (False, True):
        sam.zero_grad()
        loss, stats = interactive_step(model, bank.images, targets, regions, use_box, 3, rng)
        loss.backward()
        assert torch.isfinite(loss) and 0 <= stats["iou_last"] <= 1
        for part in (sam.image_encoder, sam.prompt_encoder, sam.mask_decoder):
            grads = [p.grad for p in part.parameters() if p.requires_grad]
            assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
def test_short_training_improves_and_saves_a_loadable_checkpoint(tiny_arch, tmp_path):
    config = DemoTrainingConfig(steps=60, batch_size=4, pool_size=16, size=tiny_arch.img_size,
                                warmup_steps=5, learning_rate=2e-3, click_iterations=2)  # fmt: skip
    steps = train_demo_model(tmp_path / "m.pt", 0, config, tiny_arch, kind="ultrasound")
    messages = [p for p in steps if p.done]
    first = float(messages[0].message.split()[1])
    last = float(messages[-1].message.split()[1])
    assert last < 0.8 * first
    model = load_checkpoint(tmp_path / "m.pt", device="cpu")
    assert model.architecture == tiny_arch and model.extra["steps"] == 60
