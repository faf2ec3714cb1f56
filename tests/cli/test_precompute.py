"""``precompute`` on stores that are damaged or are not stores at all."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_active_sam.cli import main
from napari_active_sam.core.data.files import read_image
from napari_active_sam.core.engine.checkpoints import load_checkpoint
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore, slice_key, slice_signature


def _args(image, checkpoint, out):
    return ["precompute", str(image), "--model", "tiny", "--checkpoint", str(checkpoint),
            "--out", str(out), "--workers", "1"]  # fmt: skip


def _stored_features(out, image_path, checkpoint):
    model = load_checkpoint(checkpoint, device="cpu", name="tiny")
    data = read_image(image_path).data
    source = SliceSource(data)
    params = source.parameters(source.limits())
    store = EmbeddingStore(model.encoder_id, path=out)
    features = []
    for z in range(len(data)):
        embedding = store.get(slice_key((z,)), slice_signature(data[z], model.encoder_id, params))
        features.append(None if embedding is None else embedding.features)
    return features


def test_precompute_repairs_damaged_entries(tmp_path, tiny_checkpoint, capsys):
    image = tmp_path / "stack.tif"
    stack = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    tifffile.imwrite(image, stack, photometric="minisblack")
    out = tmp_path / "stack.zarr"
    assert main(_args(image, tiny_checkpoint, out)) == 0
    before = _stored_features(out, image, tiny_checkpoint)
    (out / "0000" / "c" / "0" / "0" / "0").unlink()
    zarr.open_array(out / "0001", mode="r+")[...] = np.nan
    capsys.readouterr()
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert main(_args(image, tiny_checkpoint, out)) == 0
    err = capsys.readouterr().err
    assert "1 of 3 slices already in the store" in err and "2 repaired" in err
    for old, new in zip(before, _stored_features(out, image, tiny_checkpoint), strict=True):
        assert torch.isfinite(new).all() and new.abs().sum() > 0
        torch.testing.assert_close(new, old, atol=2e-3, rtol=0)


def test_precompute_refuses_an_ordinary_folder_as_out(tmp_path, tiny_checkpoint, capsys):
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.zeros((32, 32), np.float32))
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("mine")
    assert main(_args(image, tiny_checkpoint, folder)) == 2
    assert "not a napari-active-sam embedding store" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["thesis.txt"]
    # The image itself, or another file, is no store either: said so, left as it was.
    before = image.read_bytes()
    assert main(_args(image, tiny_checkpoint, image)) == 2
    assert "is the image to encode" in capsys.readouterr().err
    assert main(_args(image, tiny_checkpoint, folder / "thesis.txt")) == 2
    assert "is a file: give a folder" in capsys.readouterr().err
    assert image.read_bytes() == before and (folder / "thesis.txt").read_text() == "mine"


def test_precompute_encodes_a_dicom_series_folder_as_one_volume(tmp_path, tiny_checkpoint,
                                                                dicom_slice, capsys):  # fmt: skip
    folder = tmp_path / "ct"
    folder.mkdir()
    for z in range(3):
        dicom_slice(folder / f"IM{z}", "3.3", z * 2.0, np.full((32, 32), 100 * z))
    out = tmp_path / "ct.zarr"
    assert main(_args(folder, tiny_checkpoint, out)) == 0
    assert f"{folder} -> {out}" in capsys.readouterr().err
    assert len(_stored_features(out, folder, tiny_checkpoint)) == 3


def test_a_bad_checkpoint_is_refused_before_workers_start(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((32, 32), np.float32))
    notes = tmp_path / "notes.pt"
    notes.write_text("not a checkpoint")
    assert main(_args(tmp_path / "img.tif", notes, tmp_path / "out.zarr")) == 2
    err = capsys.readouterr().err
    assert "notes.pt could not be read" in err
    assert "Compute Failed" not in err and "Traceback" not in err
    assert not (tmp_path / "out.zarr").exists()


def _writes(store) -> dict[str, str]:
    """Each stored slice's write id: a slice encoded again gets a new one."""
    group = zarr.open_group(store, mode="r")
    return {name: dict(array.attrs)["write"] for name, array in group.arrays()}


def test_quality_and_measure_read_what_precompute_stored(tmp_path, capsys):
    """A folder precomputed once: ``quality`` and ``measure`` given ``--store`` read each
    slice from it (no entry is written again) and add what they encode, and refuse a store
    of another model."""
    from napari_active_sam.core.data.scenes import make_scene

    for part in ("images", "masks"):
        (tmp_path / part).mkdir()
    for name, seed in (("cells", 4), ("more", 5)):
        scene = make_scene("nuclei", np.random.default_rng(seed), 128)
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", scene.image)
        tifffile.imwrite(tmp_path / "masks" / f"{name}.tif", scene.labels.astype(np.uint16))
    store = tmp_path / "store"
    assert main(["precompute", str(tmp_path / "images"), "--model", "demo", "--out", str(store),
                 "--workers", "1"]) == 0  # fmt: skip
    stored = {name: _writes(store / name) for name in ("cells", "more")}
    assert all(len(entries) == 1 for entries in stored.values())
    for part in ("images", "masks"):  # an image added since: encoded, and added to the store
        (tmp_path / part / "late.tif").write_bytes((tmp_path / part / "more.tif").read_bytes())

    assert main(["quality", "--images", str(tmp_path / "images"), "--masks",
                 str(tmp_path / "masks"), "--estimator", "iou_head", "--out",
                 str(tmp_path / "ranked.csv"), "--store", str(store)]) == 0  # fmt: skip
    measure = ["measure", "--image", str(tmp_path / "images" / "cells.tif"), "--labels",
               str(tmp_path / "masks" / "cells.tif"), "--samples", "4",
               "--level", "0.5"]  # fmt: skip
    assert main([*measure, "--out", str(tmp_path / "measured.csv"),
                 "--store", str(store / "cells")]) == 0  # fmt: skip
    assert {name: _writes(store / name) for name in ("cells", "more")} == stored
    assert len(_writes(store / "late")) == 1

    EmbeddingStore("another-model", path=tmp_path / "other")
    capsys.readouterr()
    assert main([*measure, "--out", str(tmp_path / "other.csv"),
                 "--store", str(tmp_path / "other")]) == 2  # fmt: skip
    assert "holds embeddings of model another-model" in capsys.readouterr().err
    assert not (tmp_path / "other.csv").exists()
