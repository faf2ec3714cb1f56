"""Encoder runs, the EmbeddingStore (LRU, zarr, signatures) and distributed precompute."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading

import dask
import numpy as np
import pytest
import torch
import zarr
from segment_anything import SamPredictor

from napari_active_sam.core.cluster import dask_client
from napari_active_sam.core.engine import store
from napari_active_sam.core.engine.checkpoints import ModelRef, load_checkpoint, random_model
from napari_active_sam.core.engine.embeddings import (
    SliceEncoder,
    embed_slice,
    encode_slices,
    precompute,
)
from napari_active_sam.core.engine.preprocess import IntensityWindow, SliceSource, to_sam_rgb
from napari_active_sam.core.engine.store import (
    Embedding,
    EmbeddingStore,
    slice_key,
    slice_signature,
)
from napari_active_sam.core.errors import EmbeddingStoreError


def _store_for(model, **kwargs) -> EmbeddingStore:
    return EmbeddingStore(model.encoder_id, **kwargs)


def test_encoder_matches_sam_predictor_set_image(tiny_model):
    rgb = to_sam_rgb(np.random.default_rng(0).random((70, 100)), (0.0, 1.0))
    (embedding,) = SliceEncoder(tiny_model).encode([rgb], ["sig"])
    predictor = SamPredictor(tiny_model.sam)
    predictor.set_image(rgb)
    assert embedding.features.dtype == torch.float16
    assert embedding.original_size == predictor.original_size == (70, 100)
    assert embedding.input_size == predictor.input_size
    torch.testing.assert_close(
        embedding.features.float(), predictor.features[0], atol=2e-3, rtol=2e-3
    )


def test_batches_of_different_sizes_equal_single_runs(tiny_model):
    rng = np.random.default_rng(3)
    images = [to_sam_rgb(rng.random(shape), (0.0, 1.0)) for shape in [(40, 60), (64, 32)]]
    encoder = SliceEncoder(tiny_model)
    batch = encoder.encode(images, ["a", "b"])
    for image, embedding in zip(images, batch, strict=True):
        (single,) = encoder.encode([image], ["x"])
        torch.testing.assert_close(embedding.features, single.features, atol=2e-3, rtol=0)
        assert embedding.original_size == image.shape[:2]


def test_signature_covers_data_model_preprocessing(tiny_model, ct_volume):
    source = SliceSource(ct_volume)
    params = source.parameters(source.limits())
    base = slice_signature(ct_volume[0], tiny_model.encoder_id, params)
    assert base == slice_signature(ct_volume[0].copy(), tiny_model.encoder_id, params)
    changed = ct_volume[0].copy()
    changed[0, 0] += 1
    other_model = random_model(tiny_model.architecture, seed=1).model_id
    soft = SliceSource(ct_volume, IntensityWindow.ct("soft_tissue"))
    variants = {
        slice_signature(changed, tiny_model.encoder_id, params),
        slice_signature(ct_volume[0].astype(np.int32), tiny_model.encoder_id, params),
        slice_signature(ct_volume[0], "vit_b@0123456789abcdef", params),
        slice_signature(ct_volume[0], tiny_model.encoder_id, soft.parameters(soft.limits())),
    }
    assert other_model != tiny_model.model_id
    assert len(variants) == 4 and base not in variants


def test_lru_is_capped_in_bytes_and_holds_fp16(tiny_model, ct_volume):
    source = SliceSource(ct_volume)
    one = embed_slice(tiny_model, source, _store_for(tiny_model), (0,))
    assert one.nbytes == 2 * one.features.nelement()
    store = _store_for(tiny_model, max_bytes=int(2.5 * one.nbytes))
    for _ in encode_slices(tiny_model, source, store):
        pass
    assert store.memory_bytes == 2 * one.nbytes <= store.max_bytes
    # The two most recent slices survive; the first ones were evicted.
    limits = source.limits()
    params = source.parameters(limits)
    sig = {z: slice_signature(ct_volume[z], tiny_model.encoder_id, params) for z in range(6)}
    assert store.get(slice_key((5,)), sig[5]) is not None
    assert store.get(slice_key((0,)), sig[0]) is None


def test_newest_embedding_is_kept_even_over_budget(tiny_model, ct_volume):
    store = _store_for(tiny_model, max_bytes=10)
    embedding = embed_slice(tiny_model, SliceSource(ct_volume), store, (2,))
    assert store.get(slice_key((2,)), embedding.signature) is embedding


def test_signature_mismatch_recomputes_instead_of_returning_stale(tiny_model, ct_volume):
    store = _store_for(tiny_model)
    first = embed_slice(tiny_model, SliceSource(ct_volume), store, (1,))
    edited = ct_volume.copy()
    edited[1] = edited[1][::-1]
    again = embed_slice(tiny_model, SliceSource(edited), store, (1,))
    assert again.signature != first.signature
    assert not torch.equal(again.features, first.features)
    assert store.get(slice_key((1,)), first.signature) is None


def test_encode_slices_reports_progress_and_skips_done_slices(tiny_model, ct_volume):
    source = SliceSource(ct_volume)
    store = _store_for(tiny_model)
    steps = list(encode_slices(tiny_model, source, store, indices=[(3,), (0,), (1,)]))
    assert [s.done for s in steps] == [1, 2, 3] and steps[-1].total == 3
    assert "encoded" in steps[-1].message
    again = list(encode_slices(tiny_model, source, store))
    assert again[-1].done == again[-1].total == 6
    assert sum("already" in s.message for s in again) == 3


def test_batch_size_does_not_change_results(tiny_model, ct_volume):
    source = SliceSource(ct_volume)
    one, three = _store_for(tiny_model), _store_for(tiny_model)
    assert len(list(encode_slices(tiny_model, source, one, batch_size=1))) == 6
    assert len(list(encode_slices(tiny_model, source, three, batch_size=4))) == 2
    params = source.parameters(source.limits())
    for z in range(6):
        sig = slice_signature(ct_volume[z], tiny_model.encoder_id, params)
        a, b = one.get(slice_key((z,)), sig), three.get(slice_key((z,)), sig)
        torch.testing.assert_close(a.features, b.features, atol=2e-3, rtol=0)


def test_zarr_store_reopens_lazily(tiny_model, ct_volume, tmp_path):
    path = tmp_path / "ct.zarr"
    source = SliceSource(ct_volume)
    store = _store_for(tiny_model, path=path)
    list(encode_slices(tiny_model, source, store))
    reopened = _store_for(tiny_model, path=path)
    assert sorted(zarr.open_group(path).array_keys()) == [slice_key((z,)) for z in range(6)]
    assert reopened.memory_bytes == 0  # nothing read yet
    params = source.parameters(source.limits())
    sig = slice_signature(ct_volume[4], tiny_model.encoder_id, params)
    loaded = reopened.get(slice_key((4,)), sig)
    assert reopened.memory_bytes == loaded.nbytes
    assert torch.equal(loaded.features, store.get(slice_key((4,)), sig).features)
    assert loaded.original_size == (40, 50)
    # A changed window is a different input: a miss, not a stale hit.
    soft = SliceSource(ct_volume, IntensityWindow.ct("soft_tissue"))
    other = slice_signature(ct_volume[4], tiny_model.encoder_id, soft.parameters(soft.limits()))
    assert reopened.get(slice_key((4,)), other) is None


def test_half_written_entry_counts_as_missing(tiny_model, ct_volume, tmp_path):
    path = tmp_path / "ct.zarr"
    store = _store_for(tiny_model, path=path)
    embedding = embed_slice(tiny_model, SliceSource(ct_volume), store, (0,))
    group = zarr.open_group(path, mode="a")
    group.create_array("0001", shape=(2, 2), dtype="float16")  # no signature attribute
    reopened = _store_for(tiny_model, path=path)
    assert not reopened.has("0001", embedding.signature)
    assert reopened.has("0000", embedding.signature)


def test_store_of_another_model_is_refused_or_overwritten(tiny_model, ct_volume, tmp_path):
    path = tmp_path / "ct.zarr"
    embed_slice(tiny_model, SliceSource(ct_volume), _store_for(tiny_model, path=path), (0,))
    other = random_model(tiny_model.architecture, seed=7)
    with pytest.raises(EmbeddingStoreError, match="holds embeddings of model"):
        _store_for(other, path=path)
    fresh = _store_for(other, path=path, overwrite=True)
    assert list(zarr.open_group(path).array_keys()) == []
    with pytest.raises(EmbeddingStoreError, match="belongs to"):
        list(encode_slices(tiny_model, SliceSource(ct_volume), fresh))


def test_path_that_is_not_a_store_is_refused(tmp_path):
    group = zarr.open_group(tmp_path / "other.zarr", mode="w")
    group.attrs["purpose"] = "something else"
    with pytest.raises(EmbeddingStoreError, match="not a napari-active-sam"):
        EmbeddingStore("m@0", path=tmp_path / "other.zarr")


def test_unwritable_store_path_falls_back_to_memory(tiny_model, ct_volume, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="in memory only"):
        store = _store_for(tiny_model, path=blocker / "ct.zarr")
    assert store.path is None
    embedding = embed_slice(tiny_model, SliceSource(ct_volume), store, (0,))
    assert store.get(slice_key((0,)), embedding.signature) is embedding


def test_put_converts_to_fp16_on_cpu(tiny_model):
    store = _store_for(tiny_model)
    store.put("k", Embedding(torch.ones(4, 2, 2), (8, 8), (8, 8), "s"))
    assert store.get("k", "s").features.dtype == torch.float16


def test_local_cluster_precompute_equals_in_process(tiny_checkpoint, ct_volume, tmp_path):
    ref = ModelRef("tiny", str(tiny_checkpoint))
    model = load_checkpoint(tiny_checkpoint, device="cpu", name="tiny")
    source = SliceSource(ct_volume)
    local = _store_for(model)
    list(encode_slices(model, source, local))
    path = tmp_path / "cluster.zarr"
    with dask_client(workers=2) as (client, info):
        # Workers keep glibc's adaptive allocator and run no stack sampler (both halve the
        # speed of the click loop).
        settings = client.run(
            lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                     dask.config.get("distributed.worker.profile.enabled"))
        )  # fmt: skip
        assert set(settings.values()) == {(None, False)}
        distributed = EmbeddingStore(ref.encoder_id(), path=path)
        steps = list(precompute(ref, source, distributed, client, info.torch_threads, 2))
        assert steps[0].done == 0 and steps[-1].done == steps[-1].total == 6
        # Resumable: a rerun finds everything done and submits nothing.
        rerun = list(precompute(ref, source, EmbeddingStore(ref.encoder_id(), path=path), client))
        assert len(rerun) == 1 and rerun[0].done == 6
    reopened = EmbeddingStore(ref.encoder_id(), path=path)
    params = source.parameters(source.limits())
    for z in range(6):
        sig = slice_signature(ct_volume[z], model.encoder_id, params)
        ours, theirs = local.get(slice_key((z,)), sig), reopened.get(slice_key((z,)), sig)
        assert theirs is not None
        torch.testing.assert_close(ours.features, theirs.features, atol=2e-3, rtol=0)


def _chunk_file(path, key):
    return path / key / "c" / "0" / "0" / "0"


def _damage_deleted_chunk(path, key):
    _chunk_file(path, key).unlink()


def _damage_nan_chunk(path, key):
    zarr.open_array(path / key, mode="r+")[...] = np.nan


def _damage_truncated_chunk(path, key):
    chunk = _chunk_file(path, key)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def _damage_entry_metadata(path, key):
    (path / key / "zarr.json").write_text('{"zarr_format": 3, "node_')


def _damage_recorded_size(path, key):
    array = zarr.open_array(path / key, mode="r+")
    record = dict(array.attrs)
    record["original_size"] = [n + 7 for n in record["original_size"]]
    array.attrs.put(record)  # the sizes a mask is cropped and scaled back with


@pytest.mark.parametrize(
    "damage",
    [_damage_deleted_chunk, _damage_nan_chunk, _damage_truncated_chunk, _damage_entry_metadata,
     _damage_recorded_size],
)
def test_damaged_entry_is_recomputed_with_a_warning(tiny_model, ct_volume, tmp_path, damage):
    path = tmp_path / "ct.zarr"
    source = SliceSource(ct_volume)
    original = embed_slice(tiny_model, source, _store_for(tiny_model, path=path), (2,))
    damage(path, "0002")
    reopened = _store_for(tiny_model, path=path)
    with pytest.warns(RuntimeWarning, match="0002.*damaged.*recomputed"):
        assert not reopened.has("0002", original.signature)
    assert reopened.damaged == {"0002"}
    assert reopened.get("0002", original.signature) is None  # warned once per entry
    repaired = embed_slice(tiny_model, source, reopened, (2,))
    assert torch.isfinite(repaired.features).all() and repaired.features.abs().sum() > 0
    torch.testing.assert_close(repaired.features, original.features, atol=2e-3, rtol=0)
    fresh = _store_for(tiny_model, path=path).get("0002", original.signature)
    assert torch.equal(fresh.features, repaired.features)


def test_entry_records_a_checksum_of_its_array(tiny_model, ct_volume, tmp_path):
    path = tmp_path / "ct.zarr"
    store = _store_for(tiny_model, path=path)
    embedding = embed_slice(tiny_model, SliceSource(ct_volume), store, (0,))
    array = zarr.open_array(path / "0000")
    assert set(array.attrs) >= {"signature", "checksum", "original_size", "input_size"}
    assert array.attrs["signature"] == embedding.signature


def test_store_written_with_the_earlier_checksum_is_still_read(tiny_model, ct_volume, tmp_path):
    """Entries recorded with a BLAKE2b checksum (stores of earlier versions) stay valid;
    a wrong one is damage as before."""
    path = tmp_path / "ct.zarr"
    embedding = embed_slice(tiny_model, SliceSource(ct_volume), _store_for(tiny_model, path=path),
                            (0,))  # fmt: skip
    array = zarr.open_array(path / "0000", mode="a")
    record = dict(array.attrs)
    assert record["checksum"].startswith("crc32c:")
    features = embedding.features.numpy()
    fields = json.dumps([embedding.signature, list(embedding.original_size),
                         list(embedding.input_size)]).encode()  # fmt: skip
    digest = hashlib.blake2b(features.tobytes(), digest_size=16)
    digest.update(fields)
    array.attrs.put({**record, "checksum": digest.hexdigest()})
    loaded = _store_for(tiny_model, path=path).get("0000", embedding.signature)
    assert torch.equal(loaded.features, embedding.features)
    array.attrs.put({**record, "checksum": "0" * 32})
    with pytest.warns(RuntimeWarning, match="0000.*damaged"):
        assert _store_for(tiny_model, path=path).get("0000", embedding.signature) is None


def test_an_entry_is_checked_once_per_store(tiny_model, ct_volume, tmp_path, monkeypatch):
    """``has`` then ``get`` (what encoding then annotating does) reads the checksum once;
    an entry this store wrote is not checked at all."""
    path = tmp_path / "ct.zarr"
    embedding = embed_slice(tiny_model, SliceSource(ct_volume), _store_for(tiny_model, path=path),
                            (0,))  # fmt: skip
    checks = []
    real = store._intact
    monkeypatch.setattr(store, "_intact", lambda *args: checks.append(1) or real(*args))
    reopened = _store_for(tiny_model, path=path, max_bytes=0)
    assert reopened.has("0000", embedding.signature)
    assert reopened.get("0000", embedding.signature) is not None
    assert len(checks) == 1
    writer = _store_for(tiny_model, path=path, max_bytes=0)
    writer.put("0001", embedding)
    writer.put("0002", embedding)  # pushes 0001 out of memory
    assert writer.get("0001", embedding.signature) is not None
    assert len(checks) == 1


def test_closing_encode_slices_early_keeps_what_it_encoded(tiny_model, ct_volume, tmp_path):
    """A cancelled run leaves every slice it reported on disk, whole, and a later run
    encodes only the rest."""
    path = tmp_path / "ct.zarr"
    source = SliceSource(ct_volume)
    run = encode_slices(tiny_model, source, _store_for(tiny_model, path=path), batch_size=2)
    assert next(run).done == 2
    run.close()
    reopened = _store_for(tiny_model, path=path)
    again = list(encode_slices(tiny_model, source, reopened, batch_size=2))
    assert [step.done for step in again] == [1, 2, 4, 6]  # slices 0 and 1 were kept
    assert ["already" in step.message for step in again] == [True, True, False, False]
    assert not reopened.damaged


def test_a_failed_background_write_raises_and_keeps_the_embedding(tiny_model, tmp_path):
    path = tmp_path / "ct.zarr"
    store = _store_for(tiny_model, path=path)
    embedding = Embedding(torch.ones(4, 2, 2, dtype=torch.float16), (8, 8), (8, 8), "s")
    store.put("0000", embedding)
    shutil.rmtree(path)
    path.write_text("the store's folder replaced by a file")  # every write now fails
    store.put("0001", embedding, wait=False)
    with pytest.raises(EmbeddingStoreError, match="Cannot write to the embedding store"):
        store.flush()
    assert store.get("0001", "s") is embedding  # computed, kept in memory
    store.flush()  # each failure is raised once


def test_corrupt_store_metadata_is_a_store_error(tiny_model, ct_volume, tmp_path):
    path = tmp_path / "ct.zarr"
    embed_slice(tiny_model, SliceSource(ct_volume), _store_for(tiny_model, path=path), (0,))
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(EmbeddingStoreError, match=r"ct\.zarr.*delete it or choose another"):
        _store_for(tiny_model, path=path)


def test_ordinary_folder_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "my_images"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddingStoreError, match="not a napari-active-sam embedding store"):
        EmbeddingStore("m@0", path=folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert EmbeddingStore("m@0", path=empty).path == empty


def test_reader_sees_a_whole_entry_while_another_store_rewrites_it(tmp_path):
    path = tmp_path / "shared.zarr"
    rng = np.random.default_rng(0)
    versions = {
        name: Embedding(torch.from_numpy(rng.random((8, 16, 16)).astype(np.float16)),
                        (16, 16), (16, 16), name)
        for name in ("a", "b")
    }  # fmt: skip
    writer = EmbeddingStore("m@0", path=path)
    writer.put("0000", versions["a"])
    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            for embedding in versions.values():
                writer.put("0000", embedding)

    thread = threading.Thread(target=rewrite)
    thread.start()
    seen = []
    try:
        for i in range(300):
            name = "ab"[i % 2]
            found = EmbeddingStore("m@0", path=path).get("0000", name)
            if found is not None:
                assert torch.equal(found.features, versions[name].features)
                seen.append(name)
    finally:
        stop.set()
        thread.join()
    assert seen  # the reader did read entries, not only misses


def test_a_store_attached_mid_session_gets_what_memory_holds_and_a_wrong_one_changes_nothing(
    tiny_model, ct_volume, tmp_path
):
    source = SliceSource(ct_volume)
    memory = EmbeddingStore(tiny_model.encoder_id)
    first, second = (embed_slice(tiny_model, source, memory, (z,)) for z in (0, 1))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(EmbeddingStoreError, match="is a file"):
        memory.attach(tmp_path / "notes.txt")
    EmbeddingStore("another-model", path=tmp_path / "other.zarr")
    with pytest.raises(EmbeddingStoreError, match="another-model"):
        memory.attach(tmp_path / "other.zarr")
    assert memory.path is None and memory.get(slice_key((0,)), first.signature) is not None

    assert memory.attach(tmp_path / "kept.zarr") == 2
    reopened = EmbeddingStore(tiny_model.encoder_id, path=tmp_path / "kept.zarr")
    for z, embedding in ((0, first), (1, second)):
        torch.testing.assert_close(reopened.get(slice_key((z,)), embedding.signature).features,
                                   embedding.features)  # fmt: skip
    assert memory.attach(tmp_path / "kept.zarr") == 0  # already there: nothing written again
    assert memory.attach(None) == 0 and memory.path is None
    embed_slice(tiny_model, source, memory, (2,))  # in memory only now
    assert len(list(zarr.open_group(tmp_path / "kept.zarr", mode="r").arrays())) == 2
