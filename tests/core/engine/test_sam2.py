"""SAM 2 models: the sam2 package's own modules with random weights, decoded as SAM's are."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

from napari_active_sam.core.engine.architectures import NAMED_ARCHITECTURES  # noqa: E402
from napari_active_sam.core.engine.checkpoints import (  # noqa: E402
    check_checkpoint,
    load_checkpoint,
    load_model,
    random_model,
    save_checkpoint,
)
from napari_active_sam.core.engine.embeddings import SliceEncoder  # noqa: E402
from napari_active_sam.core.engine.predictor import Predictor  # noqa: E402
from napari_active_sam.core.engine.registry import get_spec  # noqa: E402
from napari_active_sam.core.engine.sam2_family import (  # noqa: E402
    SMOKE_SAM2_ARCHITECTURE,
    Sam2Architecture,
)
from napari_active_sam.core.engine.store import Embedding, EmbeddingStore  # noqa: E402
from napari_active_sam.core.errors import CheckpointError, ModelError  # noqa: E402
from napari_active_sam.core.prompts import Click, PromptSet  # noqa: E402

TINY = SMOKE_SAM2_ARCHITECTURE


@pytest.fixture(scope="module")
def tiny():
    return random_model(TINY, seed=3)


def _rgb(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    image[size // 4 : size // 2, size // 3 : 2 * size // 3] += 150
    return image


def test_packed_embedding_unpacks_to_the_features_sam2_computes(tiny):
    batch = tiny.sam.preprocess(torch.as_tensor(_rgb(128)).permute(2, 0, 1)[None].float())
    with torch.inference_mode():
        fpn = tiny.sam.forward_image(batch)["backbone_fpn"]
        packed = tiny.embed_images(batch)
    grid = TINY.embedding_size
    assert packed.shape == (1, 32 + 4 * 8 + 16 * 4, grid, grid)
    for ours, theirs in zip(tiny.sam.unpack(packed), fpn, strict=True):
        assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="128 channels"):
        tiny.sam.unpack(packed[:, :100])


@pytest.mark.parametrize(
    "prompts",
    [
        PromptSet(clicks=(Click(60, 40, True),)),
        PromptSet(clicks=(Click(60, 40, True), Click(10, 100, False))),
        PromptSet(box=(40, 30, 90, 66)),
        PromptSet(clicks=(Click(60, 40, True),), box=(40, 30, 90, 66)),
    ],
    ids=["click", "two clicks", "box", "box and click"],
)
# sam2's own predictor, the reference, scripts a transform with torch.jit as it is made
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_every_head_equals_sam2s_own_image_predictor(tiny, prompts):
    image = _rgb(128)  # at the model's input size: no resizing on either side
    pixels = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        features = tiny.embed_images(tiny.sam.preprocess(pixels))[0]  # fp32, not stored
    embedding = Embedding(features, (128, 128), (128, 128), "slice")
    ours = Predictor(tiny).predict(embedding, prompts)

    theirs = SAM2ImagePredictor(tiny.sam)
    grid = TINY.embedding_size  # its feature sizes are those of a 1024 px model
    theirs._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
    theirs.set_image(image)
    coords, labels = prompts.point_arrays() if prompts.clicks else (None, None)
    box = np.array(prompts.box, np.float32) if prompts.box else None
    _, iou, low_res = theirs.predict(coords, labels, box, multimask_output=True,
                                     return_logits=True)  # fmt: skip
    assert ours.logits.shape == (4, TINY.low_res_size, TINY.low_res_size)
    np.testing.assert_allclose(ours.low_res_logits[1:], low_res, atol=1e-5)
    np.testing.assert_allclose(ours.iou[1:], iou, atol=1e-4)
    _, single_iou, single = theirs.predict(coords, labels, box, multimask_output=False,
                                           return_logits=True)  # fmt: skip
    np.testing.assert_allclose(ours.low_res_logits[:1], single, atol=1e-5)  # shown for boxes
    np.testing.assert_allclose(ours.iou[:1], single_iou, atol=1e-4)
    assert ours.mask().shape == image.shape[:2]


def test_a_non_square_slice_is_padded_as_for_sam(tiny):
    image = _rgb(128)[:80]
    [embedding] = SliceEncoder(tiny).encode([image], ["slice"])
    assert embedding.input_size == (80, 128) and embedding.original_size == (80, 128)
    prediction = Predictor(tiny).predict(embedding, PromptSet(box=(40, 30, 90, 66)))
    assert prediction.mask(0).shape == (80, 128)


def test_sam2_embeddings_round_trip_through_the_store_on_disk(tiny, tmp_path):
    [embedding] = SliceEncoder(tiny).encode([_rgb(128)], ["slice"])
    EmbeddingStore(tiny.encoder_id, path=tmp_path / "e.zarr").put("0000", embedding)
    read = EmbeddingStore(tiny.encoder_id, path=tmp_path / "e.zarr").get("0000", "slice")
    assert torch.equal(read.features, embedding.features)


def test_official_format_checkpoint_loads_and_answers_like_the_network_it_came_from(
    tiny, tmp_path
):
    # sam2's files are {"model": state_dict}
    path = tmp_path / "tiny_sam2.pt"
    torch.save({"model": tiny.sam.state_dict()}, path)
    loaded = load_checkpoint(path, TINY, device="cpu")
    assert loaded.is_sam2
    for key, value in tiny.sam.state_dict().items():
        assert torch.equal(loaded.sam.state_dict()[key], value)
    # written by this package, the file names its own architecture
    ours = tmp_path / "ours.pt"
    save_checkpoint(ours, tiny.sam, TINY)
    assert check_checkpoint(ours)[2] == TINY


def test_a_sam2_checkpoint_for_another_size_names_the_size_it_fits(tmp_path):
    tiny_hiera = random_model(NAMED_ARCHITECTURES["sam2.1_hiera_t"])
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": tiny_hiera.sam.state_dict()}, path)
    # MedSAM2 is SAM 2.1 tiny at 512 px: the shapes cannot tell the two apart
    advice = "It is a sam2.1_hiera_t or sam2.1_hiera_t512 checkpoint: choose sam2.1_hiera_t"
    with pytest.raises(CheckpointError, match=advice):
        load_model("sam2.1_hiera_s", checkpoint=path)
    with pytest.raises(CheckpointError, match="'tiny-sam2' architecture.*It is a sam2.1_hiera_t"):
        load_checkpoint(path, TINY)
    # Given for a SAM (1) architecture, the file is still recognised as SAM 2's
    with pytest.raises(CheckpointError, match="'vit_b' architecture.*It is a sam2.1_hiera_t"):
        load_model("vit_b", checkpoint=path)


def test_a_sam_checkpoint_given_for_a_sam2_architecture_names_the_sam_it_fits(tmp_path):
    from napari_active_sam.core.engine.architectures import ARCHITECTURES

    # Stride-0 tensors: every key and shape of ViT-B in a few kilobytes.
    shapes = ARCHITECTURES["vit_b"].state_shapes()
    path = tmp_path / "sam_vit_b.pth"
    torch.save({k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}, path)
    with pytest.raises(CheckpointError, match="'sam2.1_hiera_s' architecture.*It is a vit_b"):
        load_model("sam2.1_hiera_s", checkpoint=path, device="cpu")


def test_registered_weights_named_with_another_architecture_are_refused(tmp_path, monkeypatch):
    """The hash tells what shapes cannot: MedSAM2's file loaded as SAM 2.1 tiny (1024 px)."""
    from napari_active_sam.core.engine import checkpoints

    path = tmp_path / "MedSAM2_latest.pt"
    torch.save({"model": {}}, path)
    monkeypatch.setattr(checkpoints, "file_sha256", lambda _: get_spec("medsam2").sha256)
    with pytest.raises(CheckpointError, match="MedSAM2 weights.*load it as medsam2"):
        load_model("sam2.1_hiera_t", checkpoint=path)


def test_a_configuration_that_names_other_code_is_refused_before_anything_runs(tmp_path):
    target = tmp_path / "copied"
    payload = (f"model.image_encoder.scalp={{_target_: shutil.copyfile, _args_: "
               f"[{__file__}, {target}]}}")  # fmt: skip
    hostile = Sam2Architecture("x", TINY.config, TINY.img_size, (*TINY.overrides, payload))
    path = tmp_path / "hostile.pt"
    torch.save({"format": "napari-active-sam/1", "architecture": hostile.to_dict(),
                "state_dict": {}}, path)  # fmt: skip
    with pytest.raises(CheckpointError, match="names 'shutil.copyfile' to build"):
        load_checkpoint(path)
    assert not target.exists()
    with pytest.raises(ModelError, match="sets '_args_'"):
        Sam2Architecture("y", TINY.config, 128, ("model.image_encoder._args_=[1]",)).build()


def test_medsam2_loads_from_a_local_file_and_encodes_at_512(tmp_path):
    arch = NAMED_ARCHITECTURES["sam2.1_hiera_t512"]
    path = tmp_path / "MedSAM2_latest.pt"
    torch.save({"model": random_model(arch).sam.state_dict()}, path)
    model = load_model("medsam2", checkpoint=path, device="cpu")
    assert model.architecture.img_size == 512 and model.name == "medsam2"
    [embedding] = SliceEncoder(model).encode([_rgb(64)], ["slice"])
    assert embedding.features.shape == (1024, 32, 32)
    prediction = Predictor(model).predict(embedding, PromptSet(box=(10, 10, 40, 40)))
    assert prediction.logits.shape == (4, 128, 128)


def test_without_the_sam2_package_loading_says_how_to_install_it(monkeypatch, tmp_path):
    from napari_active_sam.core.engine import checkpoints

    path = tmp_path / "tiny.pt"
    torch.save({"model": {}}, path)
    monkeypatch.setitem(sys.modules, "sam2", None)  # import sam2 now fails
    with pytest.raises(ModelError, match=r'--no-build-isolation "napari-active-sam\[sam2\]"'):
        load_checkpoint(path, "sam2.1_hiera_t")

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded before saying what to install")

    monkeypatch.setattr(checkpoints, "fetch_checkpoint", no_download)
    with pytest.raises(ModelError, match="SAM2_BUILD_CUDA=0"):
        load_model("sam2.1_hiera_l")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"img_size": 100}, "multiple of 16"),
        ({"config": ""}, "non-empty string"),
        ({"overrides": ("model.num_maskmem",)}, "key=value"),
    ],
)
def test_bad_sam2_architectures_are_refused(fields, message):
    with pytest.raises(ModelError, match=message):
        Sam2Architecture(**{"name": "x", "config": "configs/sam2.1/sam2.1_hiera_t.yaml",
                            **fields})  # fmt: skip


def test_a_configuration_that_does_not_exist_is_named():
    with pytest.raises(ModelError, match="neither a file nor one of the sam2 package"):
        Sam2Architecture("x", "configs/sam9/none.yaml").build()


def test_adapting_a_sam2_model_is_refused_with_what_to_do_instead(tiny):
    from napari_active_sam.core.adapt.pipeline import adapt
    from napari_active_sam.core.progress import drain

    with pytest.raises(ModelError, match="adapt a SAM model"):
        drain(adapt(tiny, []))



def test_a_window_that_answers_a_click_with_nothing_grows_until_something_answers(sample_ct):
    """Random weights answer a click on the CT's organ with an empty mask in the first,
    64-pixel window: an empty answer to a positive click means the window saw too little,
    so the zooming predictor enlarges it as it does for a mask cut by the window's edge."""
    from napari_active_sam.core.engine.embeddings import embed_slice
    from napari_active_sam.core.engine.predictor import shown_head
    from napari_active_sam.core.engine.preprocess import SliceSource, to_sam_rgb
    from napari_active_sam.core.engine.zoom import MAGNIFY, ZoomingPredictor, grid_window

    model = random_model(SMOKE_SAM2_ARCHITECTURE, seed=2)
    model.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.data.fill_(8.0)
    volume, organs, _ = sample_ct
    image = volume[8]
    source = SliceSource(image)
    predictor = Predictor(model)
    rows, cols = np.nonzero(organs[8] == 1)
    prompts = PromptSet((Click(float(np.median(cols)), float(np.median(rows)), True),))

    first = grid_window(prompts, image.shape, round(SMOKE_SAM2_ARCHITECTURE.img_size / MAGNIFY))
    crop = to_sam_rgb(image[first.slices], source.limits())
    (local,) = SliceEncoder(model).encode([crop], ["first window"])
    inside = predictor.predict(local, prompts.translated(-first.top, -first.left))
    assert not inside.mask(shown_head(inside, prompts)).any()  # the first window: nothing

    zooming = ZoomingPredictor(predictor, image, source.limits())
    embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id))
    answer = zooming.predict(embedding, prompts)
    assert answer.mask(shown_head(answer, prompts)).any()
    assert max(answer.original_size) > first.height
