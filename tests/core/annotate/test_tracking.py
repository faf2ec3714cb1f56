"""Volumes tracked by SAM 2 with its memory (its video predictor on cached embeddings),
with random weights: the sam2 package's own modules, small enough for a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from napari_active_sam.core.annotate.session import AnnotationSession  # noqa: E402
from napari_active_sam.core.annotate.volume import (  # noqa: E402
    PropagationSettings,
    propagate,
)
from napari_active_sam.core.engine.architectures import NAMED_ARCHITECTURES  # noqa: E402
from napari_active_sam.core.engine.checkpoints import load_model, random_model  # noqa: E402
from napari_active_sam.core.engine.preprocess import SliceSource  # noqa: E402
from napari_active_sam.core.engine.sam2_family import SMOKE_SAM2_ARCHITECTURE  # noqa: E402
from napari_active_sam.core.engine.store import EmbeddingStore  # noqa: E402
from napari_active_sam.core.progress import drain  # noqa: E402

LENIENT = PropagationSettings(
    min_iou=0, min_area_fraction=0, max_area_growth=np.inf, max_intensity_shift=None
)
"""Rules that never stop growth: only SAM 2's object score does."""


def _volume(depth: int = 12, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(1)
    volume = rng.normal(0, 0.1, (depth, size, size + 20)).astype(np.float32)
    for z in range(depth):
        volume[z, 20 + z : 50 + z, 30:70] += 1  # a drifting block
    return volume


def _session(model, volume=None) -> AnnotationSession:
    volume = _volume() if volume is None else volume
    return AnnotationSession(model, SliceSource(volume), EmbeddingStore(model.encoder_id),
                             zoom=False)  # fmt: skip


def _seed(volume: np.ndarray, z: int) -> np.ndarray:
    return volume[z] > 0.5


@pytest.fixture
def tiny():
    return random_model(SMOKE_SAM2_ARCHITECTURE, seed=5)


def _object_score(model, logit: float) -> None:
    """Make SAM 2's object-score head say ``logit`` whatever it sees."""
    last = model.sam.sam_mask_decoder.pred_obj_score_head.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(logit)


def test_every_slice_between_seeds_is_tracked_and_the_seeds_kept_as_given(tiny):
    volume = _volume()
    session = _session(tiny, volume)
    seeds = {3: _seed(volume, 3), 8: _seed(volume, 8)}
    steps = []
    result = drain(propagate(session, seeds), steps.append)
    for z, seed in seeds.items():
        assert np.array_equal(result.mask[z], seed)
    assert {4, 5, 6, 7} <= set(result.slices)
    assert all(result.slices[z].kept for z in (4, 5, 6, 7))  # seeds on both sides: kept
    assert steps[-1].done == steps[-1].total
    # beyond the seeds both directions decode their first slice, and any stop says why
    assert {2, 9} <= set(result.slices)
    for stop in result.stops:
        assert stop.startswith("slice ") and ": " in stop
    for z, report in result.slices.items():
        assert report.kept or any(stop.startswith(f"slice {z}: ") for stop in result.stops)
    assert set(session.slice_uncertainty) >= {(z,) for z in (4, 5, 6, 7)}


def test_the_object_score_head_stops_tracking_where_the_object_ends(tiny):
    volume = _volume()
    _object_score(tiny, -8.0)
    result = drain(propagate(_session(tiny, volume), {5: _seed(volume, 5)}, LENIENT))
    assert sorted(result.stops) == [
        "slice 4: SAM 2's object score -8.00 ≤ 0: the object ended (it vanished)",
        "slice 6: SAM 2's object score -8.00 ≤ 0: the object ended (it vanished)",
    ]
    assert not result.slices[4].kept and not result.slices[6].kept
    assert result.mask.any(axis=(1, 2)).sum() == 1

    _object_score(tiny, 8.0)  # the object is everywhere: tracked to both ends
    result = drain(propagate(_session(tiny, volume), {5: _seed(volume, 5)}, LENIENT))
    assert result.stops == ()
    assert set(result.slices) == set(range(12)) - {5}


def test_tracking_beyond_the_seeds_stops_where_the_mask_leaves_the_seeds_intensity(tiny):
    """The drifting block: the seed's mask is the bright block; a mask SAM 2 tracks beyond
    it is judged by its mean intensity against the seed's, and growth stops there when
    it moves further than allowed (a bound of 0 deviations: any change at all)."""
    from dataclasses import replace

    volume = _volume()
    _object_score(tiny, 8.0)
    seeds = {5: _seed(volume, 5)}
    strict = drain(propagate(_session(tiny, volume), seeds,
                             replace(LENIENT, max_intensity_shift=0.0)))  # fmt: skip
    tracked = drain(propagate(_session(tiny, volume), seeds, LENIENT))
    for z in (4, 6):  # the first slice each way beyond the seed
        assert tracked.slices[z].kept and tracked.slices[z].area > 0
        assert not strict.slices[z].kept
        assert any(stop.startswith(f"slice {z}: the mask's mean intensity moved")
                   for stop in strict.stops)  # fmt: skip
    assert strict.mask.any(axis=(1, 2)).sum() == 1


def test_a_correction_conditions_tracking_on_one_more_slice(tiny):
    volume = _volume()
    _object_score(tiny, 8.0)
    seeds = {2: _seed(volume, 2), 9: _seed(volume, 9)}
    before = drain(propagate(_session(tiny, volume), seeds, LENIENT))
    corrected = np.zeros_like(seeds[2])
    corrected[30:60, 40:80] = True
    after = drain(propagate(_session(tiny, volume), {**seeds, 5: corrected}, LENIENT))
    assert np.array_equal(after.mask[5], corrected)
    assert 5 in before.slices and 5 not in after.slices  # now a conditioning slice
    assert set(after.slices) == set(range(12)) - {2, 5, 9}
    # the memory now holds the correction: the slices between are tracked again from it
    assert any(before.slices[z] != after.slices[z] for z in (3, 4, 6, 7, 8))


def test_medsam2_tracks_a_volume_from_a_local_checkpoint_with_random_weights(tmp_path):
    architecture = NAMED_ARCHITECTURES["sam2.1_hiera_t512"]
    path = tmp_path / "MedSAM2_latest.pt"
    torch.save({"model": random_model(architecture).sam.state_dict()}, path)
    model = load_model("medsam2", checkpoint=path, device="cpu")
    volume = _volume(depth=4, size=64)
    result = drain(propagate(_session(model, volume), {1: _seed(volume, 1)}, LENIENT))
    assert result.mask.shape == volume.shape
    assert {0, 2} <= set(result.slices)  # the first slice each way is decoded, kept or not
    assert np.array_equal(result.mask[1], _seed(volume, 1))


def test_the_3d_protocol_plays_with_sam2_from_a_box_and_corrections(tiny, sample_ct):
    """A box on the largest slice, tracked; each correction a conditioning slice more."""
    from napari_active_sam.core.bench.volumes import play_volume
    from napari_active_sam.core.engine.preprocess import IntensityWindow

    volume, labels, spacing = sample_ct
    source = SliceSource(volume[:10], IntensityWindow.ct("soft_tissue"))
    session = AnnotationSession(tiny, source, EmbeddingStore(tiny.encoder_id))
    gt = labels[:10] == 1
    episode = drain(play_volume(session, gt, spacing, "ritm", interactions=3))
    assert [step["kind"] for step in episode.interactions][0] == "box"
    assert len(episode.dsc) == len(episode.nsd) == 3
    assert all(0.0 <= v <= 1.0 for v in episode.dsc + episode.nsd)
    for step in episode.interactions:
        assert all(stop.startswith("slice ") and ": " in stop for stop in step["stops"])


def test_benchmark_protocol_3d_takes_a_sam2_checkpoint_on_the_command_line(
    tiny, tmp_path, monkeypatch, sample_ct
):
    import json

    import tifffile

    from napari_active_sam.cli.main import main
    from napari_active_sam.core.engine.checkpoints import save_checkpoint
    from napari_active_sam.core.engine.downloads import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    checkpoint = tmp_path / "tiny_sam2.pt"
    save_checkpoint(checkpoint, tiny.sam, tiny.architecture)
    volume, labels, _ = sample_ct
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    tifffile.imwrite(data / "images" / "ct.tif", volume[:8])
    tifffile.imwrite(data / "masks" / "ct.tif", labels[:8])
    out = tmp_path / "out"
    code = main(["benchmark", "--data", str(data), "--model", "tiny-sam2", "--checkpoint",
                 str(checkpoint), "--protocol", "3d", "--strategies", "ritm", "--clicks", "1",
                 "--limit", "1", "--window", "soft_tissue", "--out", str(out),
                 "--workers", "1"])  # fmt: skip
    assert code == 0
    figures = json.loads((out / "summary.json").read_text())["strategies"]["ritm"]
    assert figures["objects"] == 1 and len(figures["dsc"]) == 2


def test_empty_seeds_end_tracking_beyond_them(tiny):
    volume = _volume()
    _object_score(tiny, 8.0)  # SAM 2 would find "an object" everywhere
    empty = np.zeros(volume.shape[1:], bool)
    seeds = {2: empty, 5: _seed(volume, 5), 8: empty}
    result = drain(propagate(_session(tiny, volume), seeds, LENIENT))
    assert sorted(result.stops) == [
        "slice 1: the object ended on the slice before (it vanished)",
        "slice 9: the object ended on the slice before (it vanished)",
    ]
    assert not result.mask[:2].any() and not result.mask[9:].any()


def test_seeds_on_a_non_square_volume_stay_where_they_are(tiny):
    volume = _volume(depth=5, size=60)[:, :, :120]  # 60 × 120: padded at the bottom
    seed = _seed(volume, 2)
    _object_score(tiny, 8.0)
    result = drain(propagate(_session(tiny, volume), {2: seed}, LENIENT))
    assert result.mask.shape == volume.shape
    assert np.array_equal(result.mask[2], seed)
    assert set(result.slices) == {0, 1, 3, 4}


def test_tracking_on_stored_embeddings_equals_sam2_on_the_frames(tiny):
    """The same volume tracked twice with SAM 2's video predictor: its frames encoded by SAM 2
    itself, and its embeddings read from the store; the tracked logits agree."""
    from napari_active_sam.core.annotate.volume import _on_input
    from napari_active_sam.core.engine.embeddings import embed_slice
    from napari_active_sam.core.engine.preprocess import to_sam_rgb

    network = tiny.sam
    _object_score(tiny, 8.0)
    volume = _volume(depth=6, size=128)[:, :, :128]
    session = _session(tiny, volume)

    def frame(z):
        rgb = to_sam_rgb(volume[z], session.limits)
        pixels = torch.as_tensor(rgb).permute(2, 0, 1)[None].float()
        return network.preprocess(pixels)[0]

    def stored(z):
        embedding = embed_slice(tiny, session.source, session.store, (z,), session.limits)
        return embedding.features.float()[None]

    tracked = []
    for state in (network.volume_state(6, stored), network.volume_state(6, stored)):
        if not tracked:  # the first time SAM 2 encodes its frames itself
            del state["stored_features"]
            state["images"] = torch.stack([frame(z) for z in range(6)])
        network.add_new_mask(state, frame_idx=2, obj_id=1,
                             mask=_on_input(_seed(volume, 2), (128, 128), 128))  # fmt: skip
        logits = {}
        for z, _, _ in network.propagate_in_video(state, start_frame_idx=2):
            if z != 2:
                logits[z] = network.last_heads.chosen_logits.clone()
        tracked.append(logits)
    assert set(tracked[0]) == {3, 4, 5}
    for z in tracked[0]:  # the store keeps fp16: agreement to about 2 % of the logits' spread
        assert tracked[0][z].std() > 0.01  # a mask with content, not "no object"
        torch.testing.assert_close(tracked[0][z], tracked[1][z], atol=1e-3, rtol=0)
