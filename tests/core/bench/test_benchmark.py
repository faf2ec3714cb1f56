"""Episodes, the dataset benchmark (resume, cluster, bad input) and its outputs."""

from __future__ import annotations

import csv
import json

import nibabel
import numpy as np
import pytest
import tifffile

from napari_active_sam.core.active.bayes_head import HEAD
from napari_active_sam.core.bench.episodes import evaluate_pair, run_episode
from napari_active_sam.core.bench.report import summarise, write_outputs
from napari_active_sam.core.bench.runner import (
    EPISODES_FILE,
    BenchmarkConfig,
    read_episodes,
    run_benchmark,
)
from napari_active_sam.core.cluster import dask_client
from napari_active_sam.core.data.datasets import discover_pairs, object_targets
from napari_active_sam.core.data.scenes import write_dataset
from napari_active_sam.core.engine.checkpoints import ModelRef
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.enums import Strategy
from napari_active_sam.core.errors import ActiveSamError
from napari_active_sam.core.progress import drain


@pytest.fixture
def scene(tiny_model):
    image = np.zeros((64, 80), np.float32)
    image[20:44, 25:60] = 1.0
    gt = image > 0
    embedding = embed_slice(tiny_model, SliceSource(image), EmbeddingStore(tiny_model.encoder_id))
    return Predictor(tiny_model), embedding, gt


@pytest.mark.parametrize("strategy", [s.value for s in Strategy])
def test_every_strategy_plays_a_full_episode(scene, tiny_head, strategy):
    predictor, embedding, gt = scene
    rng = np.random.default_rng(0)
    result = run_episode(predictor, embedding, gt, strategy, 4, rng, tiny_head)
    assert len(result.ious) == len(result.dices) == len(result.oracle_dices) == 4
    assert all(0 <= v <= 1 for v in result.ious + result.oracle_dices)
    assert all(o >= d - 1e-9 or not clicks for o, d, clicks in
               zip(result.oracle_dices, result.dices, result.clicks, strict=True)
               if strategy in ("eig", "entropy"))  # fmt: skip
    first = result.clicks[0]
    assert len(first) == 1 and first[0][2] is True and gt[first[0][0], first[0][1]]
    if strategy != "microsam":
        # The RITM click: 12 px deep along row 31, cols 36-48; the first in row-major order.
        assert first[0][:2] == (31, 36)
    clicked = [c[:2] for it in result.clicks for c in it]
    assert len(clicked) == len(set(clicked))  # never the same pixel twice
    for row, col, positive in (c for it in result.clicks for c in it):
        assert positive == gt[row, col]  # every answer is the true label
    if strategy == "microsam":
        assert all(len(it) <= 2 for it in result.clicks)


def test_bald_without_a_head_is_refused_before_any_work(scene, dataset, tiny_checkpoint, tmp_path):
    predictor, embedding, gt = scene
    with pytest.raises(ActiveSamError, match="needs a Bayesian head"):
        run_episode(predictor, embedding, gt, "bald", 2)
    config = BenchmarkConfig(dataset, ModelRef("tiny", str(tiny_checkpoint)), ("bald",), 2)
    with pytest.raises(ActiveSamError, match="train-head"):
        drain(run_benchmark(config, tmp_path / "out", client=None))
    missing = BenchmarkConfig(dataset, config.model, ("bald",), 2, head=str(tmp_path / "no.pt"))
    with pytest.raises(ActiveSamError, match="No Bayesian head"):
        drain(run_benchmark(missing, tmp_path / "out", client=None))
    # A file that is no head, and the head of another model, are refused before any work.
    (tmp_path / "notes.pt").write_text("not a head")
    damaged = BenchmarkConfig(dataset, config.model, ("bald",), 2, head=str(tmp_path / "notes.pt"))
    with pytest.raises(ActiveSamError, match="notes.pt"):
        drain(run_benchmark(damaged, tmp_path / "out", client=None))
    demos = BenchmarkConfig(dataset, config.model, ("bald",), 2,
                            head=str(HEAD.find_for(ModelRef("demo"))))  # fmt: skip
    with pytest.raises(ActiveSamError, match="fitted for model demo@.*, not tiny@"):
        drain(run_benchmark(demos, tmp_path / "out", client=None))
    assert not (tmp_path / "out").exists()  # a run refused leaves no folder behind


def test_evaluate_image_plays_every_object_of_an_open_layer(tiny_model, tiny_head):
    from napari_active_sam.core.bench.episodes import evaluate_image
    from napari_active_sam.core.errors import ImageError

    volume = np.zeros((3, 64, 64), np.float32)
    labels = np.zeros((3, 64, 64), np.int32)
    volume[1, 10:30, 10:30], labels[1, 10:30, 10:30] = 1, 1
    volume[2, 40:60, 35:60], labels[2, 40:60, 35:60] = 1, 2
    source = SliceSource(volume)
    steps = evaluate_image(tiny_model, source, labels, ["ritm", "bald"], 2, 0, tiny_head)
    records = drain(steps)
    assert sorted((r["label"], r["strategy"], r["slice"][0]) for r in records) == [
        (1, "bald", 1), (1, "ritm", 1), (2, "bald", 2), (2, "ritm", 2)
    ]  # fmt: skip
    assert all(len(r["iou"]) == 2 for r in records)
    with pytest.raises(ImageError, match="shape"):
        drain(evaluate_image(tiny_model, source, labels[0], ["ritm"]))
    with pytest.raises(ImageError, match="no object"):
        drain(evaluate_image(tiny_model, source, np.zeros_like(labels), ["ritm"]))
    with pytest.raises(ActiveSamError, match="needs a Bayesian head"):
        drain(evaluate_image(tiny_model, source, labels, ["bald"]))


def test_episodes_are_deterministic_per_seed(scene):
    predictor, embedding, gt = scene
    runs = [
        run_episode(predictor, embedding, gt, "random", 5, np.random.default_rng(s)).clicks
        for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1] != runs[2]


def test_empty_object_is_refused(scene):
    predictor, embedding, gt = scene
    with pytest.raises(ActiveSamError, match="empty"):
        run_episode(predictor, embedding, np.zeros_like(gt), "ritm", 3)


def test_summary_figures_on_hand_made_records():
    records = [
        {"strategy": "ritm", "iou": [0.5, 0.86, 0.91], "dice": [0.6, 0.9, 0.95],
         "oracle_dice": [0.7, 0.9, 0.95]},
        {"strategy": "ritm", "iou": [0.2, 0.3, 0.84], "dice": [0.3, 0.4, 0.9],
         "oracle_dice": [0.3, 0.5, 0.9]},
    ]  # fmt: skip
    summary = summarise(records, {"model": "m", "data": "d", "clicks": 3, "seed": 0})
    ritm = summary["ritm"]
    assert ritm["miou"] == [0.35, 0.58, 0.875] and ritm["objects"] == 2
    assert ritm["auc"] == pytest.approx(np.mean([0.35, 0.58, 0.875]), abs=1e-4)
    assert ritm["noc"] == {"80": 2.5, "85": 2.5, "90": 3.0}  # (2 + 3) / 2, (3 + 3) / 2
    assert ritm["nof"] == {"85": 1, "90": 1}
    figures = summary["strategies"]["ritm"]
    assert figures["delta_iou"][0] == 0 and figures["delta_iou"][2] == pytest.approx(0.525)
    thresholds = np.arange(0.5, 0.951, 0.05)
    expected_msa = np.mean([(thresholds <= 0.91).mean(), (thresholds <= 0.84).mean()])
    assert figures["msa"] == pytest.approx(expected_msa)


@pytest.fixture
def dataset(tmp_path):
    data = tmp_path / "data"
    list(write_dataset(data, 2, seed=4, kind="ultrasound", size=128))
    return data


def _config(data, checkpoint, **kwargs):
    return BenchmarkConfig(
        data=data, model=ModelRef("tiny", str(checkpoint)), strategies=("ritm", "random"),
        clicks=3, seed=5, **kwargs,
    )  # fmt: skip


def test_cluster_run_equals_in_process_run_and_resumes(dataset, tiny_checkpoint, tmp_path):
    config = _config(dataset, tiny_checkpoint)
    pairs, _ = discover_pairs(dataset)
    expected = []
    for pair in pairs:
        labels = tifffile.imread(pair.mask)
        todo = [(obj, s) for obj in object_targets(labels) for s in config.strategies]
        expected += evaluate_pair(config.model, pair, config.window_for(pair.stem), todo, 3, 5,
                                  judge=config.judge, insist=config.insist)  # fmt: skip
    key = lambda r: (r["image"], r["label"], r["strategy"])  # noqa: E731

    out = tmp_path / "out"
    with dask_client(workers=2) as (client, info):
        records = drain(run_benchmark(config, out, client, info.torch_threads))
        assert sorted(records, key=key) == sorted(expected, key=key)

        # Interrupt: keep half of the episodes and half a line of the next one.
        lines = (out / EPISODES_FILE).read_text().splitlines()
        half = len(lines) // 2
        (out / EPISODES_FILE).write_text("\n".join(lines[:half]) + "\n" + lines[half][:40])
        steps = run_benchmark(config, out, client)
        first = next(steps)
        assert first.done == half and first.total == len(lines)
        resumed = drain(steps)
    assert sorted(resumed, key=key) == sorted(expected, key=key)
    assert len(read_episodes(out)) == len(lines)

    summary = write_outputs(resumed, {"model": "tiny", "data": str(dataset), "clicks": 3,
                                      "seed": 5}, out)  # fmt: skip
    assert set(summary) >= {"ritm", "random", "model", "data", "clicks", "seed"}
    assert set(summary["ritm"]) == {"miou", "auc", "noc", "nof", "objects"}
    with open(out / "clicks.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["object", "strategy", "click", "row", "col", "positive", "iou",
                             "dice"]  # fmt: skip
    assert {r["click"] for r in rows} == {"1", "2", "3"}
    assert (out / "miou_per_click.png").stat().st_size > 1000 and (out / "report.md").is_file()


def test_bad_files_are_skipped_with_reasons(tmp_path, tiny_checkpoint):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    good = np.zeros((40, 40), np.float32)
    good[5:20, 5:20] = 1.0  # a float mask with integer values is fine
    good[30, 30] = 2.0  # an object of one pixel
    tifffile.imwrite(data / "images" / "good.tif", image)
    tifffile.imwrite(data / "masks" / "good.tif", good)
    tifffile.imwrite(data / "images" / "shape.tif", image)
    tifffile.imwrite(data / "masks" / "shape.tif", good[:30])
    tifffile.imwrite(data / "images" / "empty.tif", image)
    tifffile.imwrite(data / "masks" / "empty.tif", np.zeros((40, 40), np.uint8))
    tifffile.imwrite(data / "images" / "fractional.tif", image)
    tifffile.imwrite(data / "masks" / "fractional.tif", good * 0.5)
    tifffile.imwrite(data / "masks" / "orphan.tif", good)
    tifffile.imwrite(data / "images" / "twin.tif", image)
    tifffile.imwrite(data / "masks" / "twin.tif", good)
    nibabel.save(nibabel.Nifti1Image(image[..., None], np.eye(4)),
                 data / "images" / "twin.nii.gz")  # another image named twin: which one?
    out = tmp_path / "out"
    with dask_client(workers=1) as (client, _):
        records = drain(run_benchmark(_config(data, tiny_checkpoint), out, client))
    assert {(r["image"], r["label"]) for r in records} == {("good", 1), ("good", 2)}
    one_pixel = next(r for r in records if r["label"] == 2)
    assert one_pixel["area"] == 1 and one_pixel["clicks"][0][0][:2] == [30, 30]
    reasons = {s["file"].split("/")[-1]: s["reason"] for s in
               json.loads((out / "skipped.json").read_text())}  # fmt: skip
    assert "must match their image" in reasons["shape.tif"]
    assert "no object" in reasons["empty.tif"]
    assert "non-integer" in reasons["fractional.tif"]
    assert "no image" in reasons["orphan.tif"]
    twins = {s["file"].split("data/")[-1]: s["reason"] for s in
             json.loads((out / "skipped.json").read_text()) if "twin" in s["file"]}  # fmt: skip
    assert set(twins) == {"images/twin.nii.gz", "images/twin.tif", "masks/twin.tif"}
    assert "twin.nii.gz and twin.tif share a name: rename" in twins["images/twin.tif"]
    assert "more than one of the images is named twin" in twins["masks/twin.tif"]


def test_unwritable_output_and_bad_options(tmp_path, dataset, tiny_checkpoint):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with dask_client(workers=1) as (client, _), pytest.raises(ActiveSamError, match="Cannot write"):
        drain(run_benchmark(_config(dataset, tiny_checkpoint), blocker / "out", client))
    with pytest.raises(ActiveSamError, match="Unknown strategy"):
        BenchmarkConfig(data=dataset, model=ModelRef("tiny"), strategies=("clever",))
    with pytest.raises(ActiveSamError, match="images/ and a masks/"):
        discover_pairs(tmp_path)


def test_volumes_use_the_slice_of_largest_area():
    labels = np.zeros((4, 10, 10), np.int32)
    labels[1, 2:4, 2:4] = 1
    labels[2, 1:8, 1:8] = 1
    labels[3, 0:2, 0:2] = 2
    assert [(o.label, o.indices) for o in object_targets(labels)] == [(1, ((2,),)), (2, ((3,),))]
    every = object_targets(labels, volume=True)
    assert [(o.label, o.indices) for o in every] == [(1, ((1,), (2,))), (2, ((3,),))]


def test_3d_mode_pools_scores_over_the_slices(tmp_path, tiny_checkpoint):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    volume = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    labels = np.zeros((3, 40, 40), np.uint8)
    labels[0, 5:15, 5:15] = 1
    labels[1, 4:20, 4:20] = 1
    tifffile.imwrite(data / "images" / "vol.tif", volume, photometric="minisblack")
    tifffile.imwrite(data / "masks" / "vol.tif", labels, photometric="minisblack")
    config = _config(data, tiny_checkpoint, volume=True)
    pair = discover_pairs(data)[0][0]
    [obj] = object_targets(labels, volume=True)
    [record] = evaluate_pair(config.model, pair, config.window_for("vol"), [(obj, "ritm")], 3, 0)
    assert [s["slice"] for s in record["slices"]] == [[0], [1]]
    assert record["area"] == 100 + 256 and len(record["iou"]) == 3
    per_slice = [s["iou"][0] for s in record["slices"]]
    assert min(per_slice) - 1e-6 <= record["iou"][0] <= max(per_slice) + 1e-6


def test_resuming_into_another_runs_folder_is_refused(dataset, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    with dask_client(workers=1) as (client, _):
        drain(run_benchmark(_config(dataset, tiny_checkpoint), out, client))
        other = BenchmarkConfig(data=dataset, model=ModelRef("tiny", str(tiny_checkpoint)),
                                strategies=("ritm",), clicks=4, seed=5)  # fmt: skip
        with pytest.raises(ActiveSamError, match="different clicks"):
            drain(run_benchmark(other, out, client))
        with pytest.raises(ActiveSamError, match="different judge"):  # SAM chose the masks
            drain(run_benchmark(_config(dataset, tiny_checkpoint, judge=False), out, client))
        # A subset of the same run returns only what was asked for.
        subset = _config(dataset, tiny_checkpoint, limit=1)
        records = drain(run_benchmark(subset, out, client))
    assert {r["strategy"] for r in records} == {"ritm", "random"} and len(records) == 2


def test_zoom_decodes_a_small_object_of_a_large_image_in_a_window(tmp_path):
    from napari_active_sam.core.bench.runner import BenchmarkConfig
    from napari_active_sam.core.data.scenes import make_scene
    from napari_active_sam.core.engine.checkpoints import ModelRef

    scene = make_scene("nuclei", np.random.default_rng(3), 256)
    image = np.tile(scene.image, (4, 4))  # a large field of the same look
    labels = np.zeros(image.shape, np.uint16)
    labels[256:512, 512:768] = (scene.labels == 2) * 1  # one nucleus of about 100 pixels
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    tifffile.imwrite(data / "images" / "big.tif", image)
    tifffile.imwrite(data / "masks" / "big.tif", labels)
    config = BenchmarkConfig(data=data, model=ModelRef("demo"), window="percentile")
    pair = discover_pairs(data)[0][0]
    [obj] = object_targets(labels)
    window = config.window_for("big")
    [plain] = evaluate_pair(config.model, pair, window, [(obj, "ritm")], 3, 0)
    [zoomed] = evaluate_pair(config.model, pair, window, [(obj, "ritm")], 3, 0, zoom=True)
    assert zoomed["iou"][0] > plain["iou"][0] + 0.3


def test_the_quality_ensemble_chooses_the_first_mask_when_the_run_judges(dataset):
    """Each object's first click, shown as the annotator shows it: the multimask head the
    quality ensemble rates best with ``judge``, SAM's top-rated head without."""
    from napari_active_sam.core.bench.strategies import STRATEGIES, first_click, parse_strategy
    from napari_active_sam.core.engine.checkpoints import load_model
    from napari_active_sam.core.engine.predictor import shown_head
    from napari_active_sam.core.metrics import iou
    from napari_active_sam.core.quality.estimators import QualityModels
    from napari_active_sam.core.sim.episode import clicks_to_prompts

    config = BenchmarkConfig(data=dataset, model=ModelRef("demo"))
    pair = discover_pairs(dataset)[0][0]
    labels = tifffile.imread(pair.mask)
    todo = [(obj, "ritm") for obj in object_targets(labels)]
    window = config.window_for(pair.stem)
    judged = evaluate_pair(config.model, pair, window, todo, 1, 0, judge=True)
    sams = evaluate_pair(config.model, pair, window, todo, 1, 0)

    model = load_model("demo", device="cpu")
    quality = QualityModels.for_model(model)
    source = SliceSource(tifffile.imread(pair.image), window)
    embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id))
    rgb, ritm = source.sam_slice(), STRATEGIES[parse_strategy("ritm")]
    assert len(todo) >= 3
    for (obj, _), with_judge, without in zip(todo, judged, sams, strict=True):
        gt = labels == obj.label
        prompts = clicks_to_prompts(first_click(ritm, gt, np.random.default_rng(0)))
        answer = Predictor(model).predict(embedding, prompts)
        chosen = quality.judge(answer, prompts, embedding, rgb)
        shown = {"judged": chosen.mask(shown_head(chosen, prompts)),
                 "sam": answer.mask(shown_head(answer, prompts))}  # fmt: skip
        assert with_judge["iou"][0] == pytest.approx(iou(gt, shown["judged"]), abs=1e-6)
        assert without["iou"][0] == pytest.approx(iou(gt, shown["sam"]), abs=1e-6)


def test_an_adapted_model_is_judged_without_its_base_models_networks(dataset, tmp_path):
    """The demo model's shipped head and regressor do not fit an adapted demo model: a
    judging benchmark run of it plays its episodes (SAM's IoU head judging) instead of
    failing on every image."""
    from napari_active_sam.core.adapt.adapter import Adapter
    from napari_active_sam.core.adapt.finetune import trained_state
    from napari_active_sam.core.bench.episodes import worker_quality
    from napari_active_sam.core.engine.checkpoints import load_model

    demo = load_model("demo", device="cpu")
    adapter = tmp_path / "adapter.pt"  # decoder weights moved a little, as a step moves them
    moved = {k: v + 1e-3 if v.is_floating_point() else v
             for k, v in trained_state(demo).items()}  # fmt: skip
    Adapter(moved, demo.model_id, {}).save(adapter)
    config = BenchmarkConfig(data=dataset, model=ModelRef("demo"), adapter=str(adapter))
    pair = discover_pairs(dataset)[0][0]
    todo = [(obj, "ritm") for obj in object_targets(tifffile.imread(pair.mask))]
    records = evaluate_pair(config.model, pair, config.window_for(pair.stem), todo, 1, 0,
                            adapter_file=str(adapter), judge=True)  # fmt: skip
    assert len(records) == len(todo) and all(0 <= r["iou"][0] <= 1 for r in records)
    base = worker_quality(config.model, demo, None)
    assert base.bayes_head is not None and base.regressor is not None  # the base's own
