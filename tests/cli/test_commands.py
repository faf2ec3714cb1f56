"""The napari-active-sam command: models and precompute, on real files."""

from __future__ import annotations

import json

import nibabel
import numpy as np
import pytest
import tifffile
import torch

from napari_active_sam.cli import main
from napari_active_sam.core.data.files import read_image
from napari_active_sam.core.engine.checkpoints import load_checkpoint
from napari_active_sam.core.engine.downloads import CACHE_ENV
from napari_active_sam.core.engine.embeddings import encode_slices
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore, slice_key, slice_signature


def test_help_lists_every_command_and_each_command_has_its_own(capsys):
    from napari_active_sam.cli.main import COMMANDS

    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    listing = capsys.readouterr().out
    for command in COMMANDS:
        assert command.NAME in listing
        with pytest.raises(SystemExit) as exited:
            main([command.NAME, "--help"])
        assert exited.value.code == 0
        assert f"usage: napari-active-sam {command.NAME}" in capsys.readouterr().out
    assert "95 % credible" in listing  # measure's summary, its % kept


def test_models_lists_registry_and_cache(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert main(["models", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cache_dir"] == str(tmp_path)
    names = [m["name"] for m in report["models"]]
    assert names == ["vit_b", "vit_l", "vit_h", "medsam", "sam2.1_hiera_t", "sam2.1_hiera_s",
                     "sam2.1_hiera_b+", "sam2.1_hiera_l", "medsam2", "demo"]  # fmt: skip
    assert all(m["cached"] is None for m in report["models"] if m["sha256"])
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert any("downloads" in line for line in table)
    # Every row's size ends where the header's "size" does, however long the names.
    header = next(line for line in table if line.startswith("name"))
    end = header.index("size") + len("size")
    rows = [line for line in table if " MB " in line]
    assert len(rows) >= 9 and all(line[end - 3 : end] == " MB" for line in rows)


def test_precompute_folder_on_a_local_cluster_is_resumable(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 100, (3, 30, 40)).astype(np.int16)
    nibabel.save(
        nibabel.Nifti1Image(np.transpose(volume, (2, 1, 0)), np.diag([0.8, 0.8, 2.5, 1])),
        folder / "ct.nii.gz",
    )
    tifffile.imwrite(folder / "cells.tif", rng.random((32, 32)).astype(np.float32))
    out = tmp_path / "store.zarr"
    args = ["precompute", str(folder), "--model", "tiny", "--checkpoint", str(tiny_checkpoint),
            "--out", str(out), "--workers", "2"]  # fmt: skip
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells", "ct"]

    model = load_checkpoint(tiny_checkpoint, device="cpu", name="tiny")
    image = read_image(folder / "ct.nii.gz")
    source = SliceSource(image.data)
    expected = EmbeddingStore(model.encoder_id)
    list(encode_slices(model, source, expected))
    stored = EmbeddingStore(model.encoder_id, path=out / "ct")
    params = source.parameters(source.limits())
    for z in range(3):
        sig = slice_signature(image.data[z], model.encoder_id, params)
        torch.testing.assert_close(
            stored.get(slice_key((z,)), sig).features,
            expected.get(slice_key((z,)), sig).features,
            atol=2e-3,
            rtol=0,
        )
    capsys.readouterr()
    assert main(args) == 0
    assert "already in the store" in capsys.readouterr().err


def test_precompute_encodes_in_the_precision_asked_for(tmp_path, tiny_checkpoint):
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, np.random.default_rng(1).random((32, 32)).astype(np.float32))
    model = load_checkpoint(tiny_checkpoint, device="cpu", name="tiny")
    source = SliceSource(read_image(image).data)
    signature = slice_signature(source.raw_slice(), model.encoder_id,
                                source.parameters(source.limits()))  # fmt: skip
    features = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.zarr"
        assert main(["precompute", str(image), "--model", "tiny", "--checkpoint",
                     str(tiny_checkpoint), "--out", str(out), "--workers", "1",
                     "--precision", precision]) == 0  # fmt: skip
        stored = EmbeddingStore(model.encoder_id, path=out).get(slice_key(()), signature)
        features[precision] = stored.features.float()
    assert not torch.equal(features["bf16"], features["fp32"])  # bf16 did run
    torch.testing.assert_close(features["bf16"], features["fp32"], atol=0.05, rtol=0.05)


def test_precompute_reports_bad_input_clearly(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    code = main(["precompute", str(tmp_path / "missing.tif"), "--model", "tiny",
                 "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "s.zarr"),
                 "--workers", "1"])  # fmt: skip
    assert code == 2
    assert "missing.tif does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["precompute", str(empty), "--model", "tiny", "--checkpoint",
                 str(tiny_checkpoint), "--out", str(tmp_path / "s.zarr"),
                 "--workers", "1"])  # fmt: skip
    assert code == 2 and "holds no image file" in capsys.readouterr().err

    # One unreadable file among several is skipped and named; only if none can be read
    # is that an error. A bad precision name is refused before any worker starts.
    (empty / "bad.tif").write_text("not an image")
    tifffile.imwrite(empty / "good.tif", np.random.default_rng(2).random((32, 32), np.float32))
    out = tmp_path / "mixed.zarr"
    command = ["precompute", str(empty), "--model", "tiny", "--checkpoint",
               str(tiny_checkpoint), "--out", str(out), "--workers", "1"]  # fmt: skip
    assert main(command) == 0
    said = capsys.readouterr().err
    assert "skipped bad.tif" in said and [p.name for p in out.iterdir()] == ["good"]
    (empty / "good.tif").unlink()
    assert main([*command, "--overwrite"]) == 2
    assert "nothing was encoded" in capsys.readouterr().err
    monkeypatch.setenv("NAPARI_ACTIVE_SAM_PRECISION", "garbage")
    assert main([*command[:-4], "--out", str(tmp_path / "p.zarr"), "--workers", "1"]) == 2
    assert "encoder precision" in capsys.readouterr().err
    assert not (tmp_path / "p.zarr").exists()


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    code = main(["precompute", str(tmp_path), "--model", "vit_q", "--out", str(tmp_path / "s")])
    assert code == 2 and "Unknown model 'vit_q'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_training_on_a_missing_gpu_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["train-demo-model", "--out", str(out), "--steps", "1", "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err and not out.exists()


def test_a_resumed_training_refuses_an_init(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "m.pt"
    assert main(["train-demo-model", "--out", str(out), "--resume", "--init",
                 str(tiny_checkpoint)]) == 2  # fmt: skip
    assert "leave --init out" in capsys.readouterr().err and not out.exists()


def test_training_options_reach_the_training_configuration(tmp_path, monkeypatch):
    from napari_active_sam.core.sim import training

    seen = {}

    def record(out, seed, config, **kwargs):
        seen.update(out=out, seed=seed, config=config, **kwargs)
        yield from ()

    monkeypatch.setattr(training, "train_demo_model", record)
    out = tmp_path / "m.pt"
    assert main(["train-demo-model", "--out", str(out), "--seed", "4", "--steps", "30",
                 "--batch-size", "2", "--learning-rate", "2e-4", "--random-fraction", "0.7",
                 "--large-targets", "0.2", "--kind", "random", "--encoder-depth", "6",
                 "--real-fraction", "0.3"]) == 0
    config = seen["config"]
    assert (config.learning_rate, config.steps, config.batch_size) == (2e-4, 30, 2)
    assert config.encoder_depth == 6
    assert (config.random_fraction, config.large_targets) == (0.7, 0.2)
    assert config.real_fraction == 0.3
    assert seen["seed"] == 4 and seen["kind"] == "random" and seen["out"] == out


def test_make_dataset_then_benchmark_writes_every_output(tmp_path, tiny_checkpoint, capsys):
    data, out = tmp_path / "data", tmp_path / "results"
    assert main(["make-dataset", "--out", str(data), "--n", "2", "--seed", "3",
                 "--kind", "nuclei", "--size", "128"]) == 0  # fmt: skip
    args = ["benchmark", "--data", str(data), "--model", "tiny", "--checkpoint",
            str(tiny_checkpoint), "--strategies", "ritm,eig,oracle", "--clicks", "3",
            "--out", str(out), "--workers", "1", "--limit", "3"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"model", "data", "clicks", "seed"} <= set(summary)
    assert summary["clicks"] == 3 and summary["ritm"]["objects"] == 3
    assert len(summary["eig"]["miou"]) == 3
    for name in ("clicks.csv", "report.md", "miou_per_click.png", "noc.png", "eig_vs_oracle.png"):
        assert (out / name).stat().st_size > 0
    assert "ritm" in capsys.readouterr().err
    # A second run finds every episode done.
    assert main(args) == 0
    assert "9 of 9 episodes already done" in capsys.readouterr().err


def test_precompute_into_an_unwritable_store_fails(tmp_path, tiny_checkpoint, capsys):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((32, 32), np.float32))
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["precompute", str(tmp_path / "img.tif"), "--model", "tiny", "--checkpoint",
            str(tiny_checkpoint), "--out", str(blocker / "s.zarr"), "--workers", "1"]  # fmt: skip
    with pytest.warns(RuntimeWarning, match="in memory only"):
        assert main(args) == 2
    assert "choose a writable --out" in capsys.readouterr().err


def test_a_benchmark_that_evaluates_nothing_fails(tmp_path, tiny_checkpoint, capsys):
    import imageio.v3 as iio

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    iio.imwrite(data / "images" / "a.png", np.zeros((32, 32), np.uint8))
    iio.imwrite(data / "masks" / "a.png", np.ones((16, 16), np.uint8))  # another shape
    args = ["benchmark", "--data", str(data), "--model", "tiny", "--checkpoint",
            str(tiny_checkpoint), "--strategies", "ritm", "--clicks", "2",
            "--out", str(tmp_path / "out"), "--workers", "1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Nothing was evaluated" in err and "skipped.json" in err


def test_the_demo_without_a_display_says_to_use_xvfb_or_headless(monkeypatch, capsys):
    """No X11 or Wayland display and no Qt platform chosen: a clear error, not Qt's abort."""
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert main(["demo", "--screenshot", "never.png"]) == 2
    error = capsys.readouterr().err
    assert "no display" in error and "xvfb-run -a" in error and "--headless" in error


def test_a_demo_screenshot_that_could_not_be_saved_is_refused_before_the_demo(tmp_path,
                                                                             capsys):  # fmt: skip
    for shot, said in ((tmp_path, "is a folder"), (tmp_path / "shot.txt", "ending in .png")):
        assert main(["demo", "--headless", "--clicks", "1", "--screenshot", str(shot)]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "shot.txt").exists()
    # A folder that does not exist yet is made, and the figure saved there.
    made = tmp_path / "new" / "shot.png"
    assert main(["demo", "--headless", "--clicks", "1", "--screenshot", str(made)]) == 0
    assert made.read_bytes()[:4] == b"\x89PNG"


def test_quality_refuses_masks_that_are_the_images_folder(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    assert main(["quality", "--images", str(images), "--masks", str(images), "--out",
                 str(tmp_path / "q.csv")]) == 2  # fmt: skip
    assert "--masks" in (said := capsys.readouterr().err) and "is the image itself" in said
    assert not (tmp_path / "q.csv").exists()


def test_a_warning_reaches_the_user_as_a_plain_line(tmp_path, tiny_checkpoint):
    import subprocess
    import sys

    image = tmp_path / "two.tif"
    with tifffile.TiffWriter(image) as tiff:  # two images in one file: the first is read
        for seed in (0, 1):
            tiff.write(np.random.default_rng(seed).random((32, 32), np.float32))
    done = subprocess.run(
        [sys.executable, "-m", "napari_active_sam.cli.main", "precompute", str(image),
         "--model", "tiny", "--checkpoint", str(tiny_checkpoint), "--out",
         str(tmp_path / "s.zarr"), "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "napari-active-sam: warning: two.tif holds 2 images" in done.stderr
    assert "warnings.warn" not in done.stderr and ".py:" not in done.stderr
