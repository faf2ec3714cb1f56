"""Architectures: field checks, stored form, size limit from a meta-device build."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from napari_active_sam.core.engine.architectures import (
    ARCHITECTURES,
    DEMO_ARCHITECTURE,
    MAX_DEPTH,
    MAX_PARAMETERS,
    SMOKE_ARCHITECTURE,
    Architecture,
    deepened,
)
from napari_active_sam.core.errors import ModelError

EVERY = [*ARCHITECTURES.values(), SMOKE_ARCHITECTURE, DEMO_ARCHITECTURE]


@pytest.mark.parametrize("arch", EVERY, ids=lambda a: a.name)
def test_every_shipped_architecture_is_valid_and_within_the_size_limit(arch):
    shapes = arch.state_shapes()
    assert sum(shape.numel() for shape in shapes.values()) <= MAX_PARAMETERS
    assert Architecture.from_dict(arch.to_dict()) == arch
    if arch.name in ("tiny", "demo"):  # small enough to build for real and compare
        real = arch.build().state_dict()
        assert {k: v.shape for k, v in real.items()} == shapes


def test_vit_h_is_counted_without_allocating_it():
    shapes = ARCHITECTURES["vit_h"].state_shapes()
    assert sum(shape.numel() for shape in shapes.values()) == 641_090_864
    assert MAX_PARAMETERS > 641_090_864


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("encoder_depth", 0, "positive whole number"),
        ("encoder_depth", -3, "positive whole number"),
        ("encoder_depth", "12", "positive whole number"),
        ("encoder_depth", 2.0, "positive whole number"),
        ("encoder_depth", True, "positive whole number"),
        ("encoder_depth", MAX_DEPTH + 1, f"at most {MAX_DEPTH}"),
        ("decoder_depth", 10**9, f"at most {MAX_DEPTH}"),
        ("img_size", -128, "positive whole number"),
        ("img_size", 130, "multiple of patch_size"),
        ("patch_size", 0, "positive whole number"),
        ("window_size", -1, "non-negative whole number"),
        ("encoder_num_heads", 0, "divide encoder_embed_dim"),
        ("encoder_num_heads", 3, "divide encoder_embed_dim"),
        ("encoder_global_attn_indexes", (2,), "below encoder_depth"),
        ("encoder_global_attn_indexes", ("1",), "list of whole numbers"),
        ("prompt_embed_dim", 6, "at least 8"),
        ("prompt_embed_dim", 34, "multiple of 2 × decoder_num_heads"),
        ("decoder_num_heads", 0, "positive whole number"),
        ("mask_in_chans", 2, "at least 4"),
        ("name", "", "non-empty string"),
        ("encoder", "swin", "'vit' or 'cnn'"),
    ],
)
def test_invalid_fields_are_named(field, value, rule):
    with pytest.raises(ModelError, match=f"field '{field}' .*{rule}"):
        replace(SMOKE_ARCHITECTURE, **{field: value})


def test_a_cnn_encoder_needs_a_power_of_two_patch():
    with pytest.raises(ModelError, match="'patch_size' must be a power of two"):
        replace(DEMO_ARCHITECTURE, patch_size=12, img_size=264)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("encoder_depth"), "lacks the fields encoder_depth"),
        (lambda d: d.update(depth=3), "unknown fields \\['depth'\\]"),
        (lambda d: d.update(encoder_global_attn_indexes=7), "'encoder_global_attn_indexes'"),
        (lambda d: d.update(patch_size="16"), "'patch_size' must be a positive"),
    ],
)
def test_stored_form_with_missing_unknown_or_wrong_fields(change, message):
    data = SMOKE_ARCHITECTURE.to_dict()
    change(data)
    with pytest.raises(ModelError, match=message):
        Architecture.from_dict(data)
    with pytest.raises(ModelError, match="must be a dict, not list"):
        Architecture.from_dict([1, 2])


def test_an_oversized_architecture_is_refused_before_anything_is_allocated(monkeypatch):
    wide = replace(ARCHITECTURES["vit_h"], name="wide", encoder_embed_dim=4096, encoder_depth=8,
                   encoder_global_attn_indexes=(7,))  # fmt: skip
    devices = []
    build = Architecture.build
    monkeypatch.setattr(
        Architecture, "build", lambda self: devices.append(torch.empty(()).device) or build(self)
    )
    with pytest.raises(ModelError, match="1,637 million parameters, more than the 1,000"):
        wide.state_shapes()
    assert devices == [torch.device("meta")]


TINY_CNN = replace(SMOKE_ARCHITECTURE, name="tiny-cnn", encoder="cnn",
                   encoder_global_attn_indexes=())  # fmt: skip


def test_a_deepened_encoder_keeps_every_weight_and_its_new_blocks_add_nothing():
    torch.manual_seed(0)
    sam = TINY_CNN.build()
    grown = deepened(sam, TINY_CNN, TINY_CNN.encoder_depth + 2)
    before, after = sam.state_dict(), grown.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert len(after) > len(before)
    blocks = list(grown.image_encoder.body)[-2:]
    x = torch.randn(1, TINY_CNN.encoder_embed_dim, 8, 8)
    for block in blocks:  # the branch is zero: the block is its activation alone
        assert torch.equal(block.body(x), torch.zeros_like(x))
        assert torch.allclose(block(x), torch.nn.functional.gelu(x))
    image = torch.randn(1, 3, TINY_CNN.img_size, TINY_CNN.img_size)
    with torch.no_grad():
        assert grown.image_encoder(image).shape == sam.image_encoder(image).shape


@pytest.mark.parametrize(
    "arch, depth",
    [(SMOKE_ARCHITECTURE, 4), (TINY_CNN, TINY_CNN.encoder_depth - 1)],
    ids=["vit", "shallower"],
)
def test_only_a_cnn_encoder_grows_and_never_shrinks(arch, depth):
    with pytest.raises(ModelError, match="Only a cnn image encoder grows"):
        deepened(arch.build(), arch, depth)
