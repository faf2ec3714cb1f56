"""The BALD-SAM head: inputs, MAP training, the laplace-torch posterior, files."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_active_sam.core.active import bayes_head
from napari_active_sam.core.active.bayes_head import (
    HEAD,
    MAX_SAMPLES,
    BayesHead,
    BayesHeadNet,
    bounded_samples,
    click_maps,
    click_sigma,
    head_inputs,
)
from napari_active_sam.core.active.head_training import HeadConfig, fit_head, generated_examples
from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE as TINY
from napari_active_sam.core.engine.checkpoints import ModelRef, load_model, random_model
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.geometry import (
    CellGrid,
    acquisition_grid,
    grid_to_image,
    image_to_grid,
)
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.enums import HessianStructure, PriorMethod
from napari_active_sam.core.errors import ActiveSamError, CheckpointError, ModelError
from napari_active_sam.core.progress import drain
from napari_active_sam.core.prompts import Click, PromptSet


def test_click_maps_put_a_unit_gaussian_of_scaled_sigma_on_each_click():
    prompts = PromptSet((Click(100, 50, True), Click(10, 200, False)))
    cells = CellGrid(img_size=1024, stride=1, side=256, original_size=(256, 256),
                     input_size=(1024, 1024))  # fmt: skip
    maps = click_maps(prompts, cells)
    assert maps.shape == (2, 256, 256) and maps.min() >= 0 and maps.max() <= 1
    # 256 px image → 1024 input → 256 grid: pixel coordinates carry over.
    assert np.unravel_index(maps[0].argmax(), maps[0].shape) == (50, 100)
    assert np.unravel_index(maps[1].argmax(), maps[1].shape) == (200, 10)
    assert maps[0][50, 100 + 8] == pytest.approx(np.exp(-0.5), rel=1e-3)  # σ = 8 at 256
    assert click_sigma(64) == 2.0
    two = click_maps(PromptSet((Click(100, 50), Click(100, 50))), cells)
    assert two.max() == 1.0  # overlapping clicks are clamped, not summed past 1


def test_grid_and_image_coordinates_round_trip():
    xy = np.array([[0.0, 0.0], [639.0, 479.0], [320.0, 100.0]])
    grid = image_to_grid(xy, (480, 640), 1024, 256)
    assert np.allclose(grid_to_image(grid, (480, 640), 1024, 256), xy, atol=1e-6)
    assert grid[:, 1].max() < 256 * 480 / 640  # rows stay above SAM's padding


def test_an_untrained_head_reproduces_sams_logits(tiny_examples):
    net = BayesHeadNet()
    x = torch.as_tensor(tiny_examples[0].inputs)[None]
    assert torch.equal(net(x), x[:, :1])


def test_fit_trains_below_sams_loss_and_samples_differ(tiny_examples, tiny_head):
    info = tiny_head.info
    assert info["examples"] == len(tiny_examples) and info["fit_pixels"] > 1000
    assert info["map_loss"] < info["sam_loss"]  # the head learns from the click maps
    assert info["prior_precision"][0] > 0
    assert tiny_head.covariance.shape == (17, 17)
    assert torch.all(torch.linalg.eigvalsh(tiny_head.covariance.double()) >= 0)
    inputs = tiny_examples[0].inputs
    sampled = torch.sigmoid(tiny_head.sample_logits(inputs, 8))
    grid = TINY.low_res_size
    assert sampled.shape == (8, grid, grid) and sampled.min() >= 0 and sampled.max() <= 1
    many = tiny_head.sample_logits(inputs, 256, torch.Generator().manual_seed(0))
    assert many.std(dim=0).max() > 0  # the posterior is not a point mass
    with torch.no_grad():  # the last layer is linear: the samples centre on the MAP logits
        map_logits = tiny_head.net(torch.as_tensor(inputs)[None])[0, 0]
    spread = float(many.std(dim=0).max())
    torch.testing.assert_close(many.mean(dim=0), map_logits, atol=0.3 * spread, rtol=0)


def test_a_finer_grid_is_averaged_to_acquisition_cells_before_the_head():
    fine = random_model(replace(TINY, name="fine", patch_size=8), seed=1)
    assert fine.architecture.low_res_size == 64 and acquisition_grid(fine) == 32
    image = np.zeros((60, 90), np.float32)
    image[15:45, 20:70] = 1.0
    embedding = embed_slice(fine, SliceSource(image), EmbeddingStore(fine.encoder_id))
    prompts = PromptSet((Click(45, 30, True), Click(5, 5, False)))
    logits = np.random.default_rng(0).normal(0, 30, (3, 64, 64)).astype(np.float32)
    cells = CellGrid.of(fine, embedding)
    assert (cells.stride, cells.side) == (2, 32)
    inputs = head_inputs(cells.pool(logits), prompts, cells)
    assert inputs.shape == (3, 3, 32, 32)
    pooled = torch.nn.functional.avg_pool2d(torch.as_tensor(logits)[:, None], 2)[:, 0]
    np.testing.assert_allclose(inputs[:, 0], pooled.clamp(-20, 20).numpy(), atol=1e-5)
    maps = click_maps(prompts, cells)
    np.testing.assert_array_equal(inputs[1, 1:], maps)
    np.testing.assert_array_equal(head_inputs(cells.pool(logits[1]), prompts, cells), inputs[1])
    # A head fitted on the full 64-cell grid (an older version's) is refused by name.
    head = BayesHead(BayesHeadNet(), torch.zeros(17), torch.eye(17), fine.model_id, 64)
    with pytest.raises(ModelError, match="works on a 64-cell grid.*fit it again"):
        head.check_model(fine)


def test_samples_of_several_inputs_take_turns(tiny_examples, tiny_head, monkeypatch):
    """K samples over M inputs: sample k refines input k mod M with the k-th weight draw."""
    inputs = np.stack([tiny_examples[i].inputs for i in range(3)])
    sampled = tiny_head.sample_logits(inputs, 7, torch.Generator().manual_seed(4))
    grid = TINY.low_res_size
    assert sampled.shape == (7, grid, grid)
    for m in range(3):  # the same seed draws the same 7 weights
        alone = tiny_head.sample_logits(inputs[m], 7, torch.Generator().manual_seed(4))
        torch.testing.assert_close(sampled[m::3], alone[m::3])
    assert not torch.allclose(sampled[0], sampled[1])
    # Large grids run the inputs one at a time: the same maps.
    monkeypatch.setattr(bayes_head, "BATCH_CELLS", grid - 1)
    one_by_one = tiny_head.sample_logits(inputs, 7, torch.Generator().manual_seed(4))
    torch.testing.assert_close(one_by_one, sampled)


@pytest.mark.parametrize("prior", list(PriorMethod))
@pytest.mark.parametrize("structure", list(HessianStructure))
@pytest.mark.filterwarnings("error::FutureWarning")  # a user's console stays clean
def test_every_posterior_structure_and_prior_method(tiny_examples, structure, prior):
    config = HeadConfig(steps=5, fit_pixels=2000, structure=structure, prior=prior)
    head = drain(fit_head(tiny_examples, random_model(TINY), config))
    assert head.info["structure"] == structure
    assert torch.all(torch.linalg.eigvalsh(head.covariance.double()) > 0)
    assert (
        head.covariance.diag().min() > 0
        and (head.covariance - head.covariance.T).abs().max() < 1e-5
    )


def test_bad_options_and_no_examples_are_clear_errors(tiny_examples):
    with pytest.raises(ActiveSamError, match="structure 'lowrank': use diag, kron, full"):
        HeadConfig(structure="lowrank")
    with pytest.raises(ActiveSamError, match="prior method 'bayes': use marglik, gridsearch"):
        HeadConfig(prior="bayes")
    with pytest.raises(ActiveSamError, match="commit some objects"):
        drain(fit_head([], random_model(TINY)))


def test_sample_count_is_bounded():
    with pytest.raises(ActiveSamError, match="at least 1"):
        bounded_samples(0, 256)
    assert bounded_samples(10**9, 64) == MAX_SAMPLES
    assert bounded_samples(10**9, 4096) * 4096**2 <= 2**26  # memory cap for huge grids
    assert bounded_samples(5, 256) == 5


def test_saved_head_loads_with_its_model_and_refuses_another(tmp_path, tiny_head, tiny_examples):
    path = tiny_head.save(tmp_path / "tiny.head.pt")
    again = BayesHead.load(path, random_model(TINY, seed=0))
    seed = torch.Generator().manual_seed(3)
    first = tiny_head.sample_logits(tiny_examples[1].inputs, 4, generator=seed)[0]
    second = again.sample_logits(tiny_examples[1].inputs, 4, torch.Generator().manual_seed(3))[0]
    assert torch.allclose(first, second)
    with pytest.raises(ModelError, match="fitted for model"):
        BayesHead.load(path, random_model(TINY, seed=1))
    (tmp_path / "junk.pt").write_bytes(b"not a head")
    with pytest.raises(CheckpointError):
        BayesHead.load(tmp_path / "junk.pt")
    HEAD.save(tmp_path / "cut.pt", {"format": 1, "mean": torch.zeros(17)})
    with pytest.raises(CheckpointError, match="damaged"):
        BayesHead.load(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="train-head"):
        BayesHead.load(tmp_path / "missing.pt")


def test_heads_are_found_next_to_the_checkpoint_and_the_users_first(
    tmp_path, monkeypatch, tiny_checkpoint, tiny_head
):
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_CACHE", str(tmp_path / "cache"))
    ref = ModelRef("tiny", str(tiny_checkpoint))
    assert HEAD.find_for(ref) is None
    assert HEAD.beside(tiny_checkpoint) == tiny_checkpoint.with_name("tiny.head.pt")
    assert HEAD.shipped(ref) == HEAD.beside(tiny_checkpoint)
    model = ref.load("cpu")
    shipped = BayesHead(tiny_head.net, tiny_head.mean, tiny_head.covariance, model.model_id, 32)
    shipped.save(HEAD.beside(tiny_checkpoint))
    assert HEAD.find_for(ref) == HEAD.beside(tiny_checkpoint)
    assert BayesHead.for_model(model, tiny_checkpoint).model_id == model.model_id
    shipped.save(HEAD.users(model.model_id))
    assert HEAD.find_for(ref) == HEAD.users(model.model_id)


def test_the_shipped_demo_head_improves_on_sam_for_fresh_click_sets():
    model = load_model("demo", device="cpu")
    head = BayesHead.for_model(model)
    assert head is not None and head.info["structure"] == "full"
    examples = drain(generated_examples(model, 6, seed=1234, clicks=4))
    inputs = torch.as_tensor(np.stack([e.inputs for e in examples]))
    targets = torch.as_tensor(np.stack([e.target for e in examples]))
    fraction, on_image = targets[:, :1], targets[:, 1:]

    def loss(logits):
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, fraction, weight=on_image
        )

    with torch.no_grad():
        assert loss(head.net(inputs)) < loss(inputs[:, :1])


def _head_file(path, mean, covariance, **fields):
    """A head file as :meth:`BayesHead.save` writes it, with any posterior."""
    payload = {"format": 1, "state_dict": BayesHeadNet().state_dict(), "mean": mean,
               "covariance": covariance, "model_id": "tiny@0", "grid": 32, "info": {}}  # fmt: skip
    return HEAD.save(path, {**payload, **fields})


@pytest.mark.parametrize(
    ("mean", "covariance"),
    [
        (torch.zeros(5), torch.eye(5)),
        (torch.zeros(18), torch.eye(18)),
        (torch.zeros(17), torch.eye(5)),
        (torch.zeros(17, 1), torch.eye(17)),
        (torch.zeros(17), torch.eye(17)[:, :5]),
        (torch.zeros(()), torch.eye(17)),
    ],
    ids=["both-5", "both-18", "cov-5", "mean-17x1", "cov-17x5", "mean-scalar"],
)
def test_a_posterior_of_the_wrong_size_is_refused_at_load(tmp_path, mean, covariance):
    path = _head_file(tmp_path / "odd.head.pt", mean, covariance)
    with pytest.raises(CheckpointError, match="last layer has 17 parameters") as info:
        BayesHead.load(path)
    assert str(info.value).startswith(f"{path} is damaged") and "train-head" in str(info.value)
    good = _head_file(tmp_path / "good.head.pt", torch.zeros(17), torch.eye(17))
    assert BayesHead.load(good).mean.shape == (17,)


def test_a_posterior_that_is_not_finite_is_refused_at_load(tmp_path):
    mean = torch.zeros(17)
    mean[3] = float("nan")
    path = _head_file(tmp_path / "nan.head.pt", mean, torch.eye(17))
    with pytest.raises(CheckpointError, match="not finite"):
        BayesHead.load(path)


class _Payload:
    """Unpickling this runs a shell command that writes ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'echo unpickled > "{self.marker}"',)


def test_a_head_file_with_pickled_code_is_refused_in_plain_words(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.head.pt"
    torch.save({"kind": "napari-active-sam head", "mean": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        BayesHead.load(path)
    message = str(info.value)
    assert message.startswith(f"{path} holds Python objects beyond tensors (")
    assert "does not load such files. Fit one with `napari-active-sam train-head`." in message
    assert "\x1b" not in message and "weights_only" not in message
    assert not marker.exists()
