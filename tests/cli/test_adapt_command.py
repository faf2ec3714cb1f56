"""`napari-active-sam adapt`, and its adapter in benchmark, quality and train-head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_active_sam.cli import main
from napari_active_sam.core.active.bayes_head import HEAD
from napari_active_sam.core.adapt.adapter import Adapter
from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE
from napari_active_sam.core.engine.checkpoints import load_checkpoint, random_model, save_checkpoint
from napari_active_sam.core.engine.downloads import CACHE_ENV


def labelled_folder(root, count: int, seed: int):
    """``count`` images of three to four discs each, with their instance labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows, cols = np.mgrid[:96, :96]
    for n in range(count):
        image = rng.normal(0.2, 0.03, (96, 96)).astype(np.float32)
        labels = np.zeros((96, 96), np.uint16)
        for label in range(1, int(rng.integers(3, 5)) + 1):
            r, c = rng.integers(16, 80, size=2)
            inside = ((rows - r) ** 2 + (cols - c) ** 2 < 10**2) & (labels == 0)
            image[inside], labels[inside] = 0.9, label
        tifffile.imwrite(root / "images" / f"img{n}.tif", image)
        tifffile.imwrite(root / "masks" / f"img{n}.tif", labels)
    return root


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def test_adapt_writes_an_adapter_that_benchmark_and_quality_use(tmp_path, tiny_checkpoint,
                                                              capsys):  # fmt: skip
    labelled = labelled_folder(tmp_path / "labelled", 2, seed=1)
    unlabelled = labelled_folder(tmp_path / "unlabelled", 1, seed=2)
    out = tmp_path / "my.adapter.pt"
    model = ["--model", "tiny", "--checkpoint", str(tiny_checkpoint)]
    assert main(["adapt", *model, "--data", str(labelled), "--unlabelled", str(unlabelled),
                 "--rank", "iou", "--steps", "3", "--dpo-steps", "2", "--threads", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "fine-tuning: held-out IoU" in err and f"saved {out}" in err
    base = load_checkpoint(tiny_checkpoint, device="cpu", name="tiny")
    adapter = Adapter.load(out, base)
    head = HEAD.users(adapter.apply(base).model_id)
    assert head.is_file() and str(head) in err  # a head fitted for the adapted model
    assert adapter.report["labelled"] >= 6 and adapter.report["stage1"]["steps"] >= 1
    # Discs of about 20 pixels span a quarter of tiny's 128-pixel input at twice their size.
    assert adapter.report["magnify"] == 2

    results = tmp_path / "results"
    assert main(["benchmark", "--data", str(unlabelled), *model, "--adapter", str(out),
                 "--strategies", "ritm", "--clicks", "2", "--out", str(results),
                 "--workers", "1"]) == 0  # fmt: skip
    summary = json.loads((results / "summary.json").read_text())
    assert summary["model"] == adapter.apply(base).model_id != base.model_id
    assert summary["adapter"] == str(out)

    ranking = tmp_path / "q.csv"
    assert main(["quality", "--images", str(unlabelled / "images"), "--masks",
                 str(unlabelled / "masks"), *model, "--adapter", str(out), "--estimator",
                 "iou_head", "--out", str(ranking), "--threads", "1"]) == 0  # fmt: skip
    assert ranking.read_text().count("\n") >= 4


def test_adapt_refuses_what_it_cannot_use(tmp_path, tiny_checkpoint, capsys):
    model = ["--model", "tiny", "--checkpoint", str(tiny_checkpoint)]
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    assert main(["adapt", *model, "--data", str(empty), "--out", str(tmp_path / "a.pt")]) == 2
    assert "holds no labelled object" in capsys.readouterr().err

    single = tmp_path / "single"
    (single / "images").mkdir(parents=True)
    (single / "masks").mkdir()
    image = np.zeros((64, 64), np.float32)
    image[20:40, 20:40] = 1
    tifffile.imwrite(single / "images" / "a.tif", image)
    tifffile.imwrite(single / "masks" / "a.tif", (image > 0).astype(np.uint8))
    assert main(["adapt", *model, "--data", str(single), "--out", str(tmp_path / "a.pt")]) == 2
    assert "at least 2 labelled objects" in capsys.readouterr().err

    # A run in which no step did better writes nothing: its adapter would be the model as
    # it was, and its head would replace the head of any other such run.
    other = tmp_path / "other.pt"
    save_checkpoint(other, random_model(SMOKE_ARCHITECTURE, seed=5).sam, SMOKE_ARCHITECTURE)
    labelled = labelled_folder(tmp_path / "labelled", 1, seed=3)
    adapter = tmp_path / "b.pt"
    assert main(["adapt", "--model", "tiny", "--checkpoint", str(other), "--data",
                 str(labelled), "--steps", "1", "--out", str(adapter)]) == 2  # fmt: skip
    assert "nothing written to" in capsys.readouterr().err and not adapter.exists()
    assert not list((tmp_path / "cache").rglob("*.head.pt"))

    # An adapter for another model is refused before any work, by every command.
    from napari_active_sam.core.adapt.finetune import trained_state

    made_for = load_checkpoint(other, device="cpu", name="tiny")
    Adapter(trained_state(made_for), made_for.model_id, {}).save(adapter)
    assert main(["benchmark", "--data", str(labelled), *model, "--adapter", str(adapter),
                 "--strategies", "ritm", "--clicks", "1", "--out", str(tmp_path / "r"),
                 "--workers", "1"]) == 2  # fmt: skip
    assert "was made for model" in capsys.readouterr().err
    assert main(["train-head", *model, "--adapter", str(adapter), "--images", "1",
                 "--steps", "1", "--out", str(tmp_path / "h.pt")]) == 2  # fmt: skip
    assert "was made for model" in capsys.readouterr().err

    # Nothing of the user's is written over: a file of the data, or a file that exists.
    mask = labelled / "masks" / next(p.name for p in (labelled / "masks").iterdir())
    before = mask.read_bytes()
    fits = {"adapt": ["--data", str(labelled), "--steps", "1"],
            "train-head": ["--data", str(labelled), "--steps", "1"],
            "train-quality": ["--data", str(labelled)]}  # fmt: skip
    for command, given in fits.items():
        assert main([command, *model, *given, "--out", str(mask), "--overwrite"]) == 2
        assert "should end in .pt" in capsys.readouterr().err
        assert main([command, *model, *given, "--out", str(adapter)]) == 2
        assert "exists: choose a new file" in capsys.readouterr().err
    assert mask.read_bytes() == before

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    assert main(["quality", "--images", str(labelled / "images"), "--masks",
                 str(labelled / "masks"), *model, "--adapter", str(corrupt),
                 "--out", str(tmp_path / "q.csv")]) == 2  # fmt: skip
    assert "adapt" in capsys.readouterr().err
    assert torch.load(tiny_checkpoint, weights_only=True)  # the base file is untouched


def test_stage_two_on_images_without_masks_finds_objects_like_yours(tmp_path, tiny_checkpoint,
                                                                   capsys):  # fmt: skip
    labelled = labelled_folder(tmp_path / "labelled", 2, seed=1)
    images = labelled_folder(tmp_path / "unlabelled", 1, seed=4) / "images"
    model = ["--model", "tiny", "--checkpoint", str(tiny_checkpoint)]
    out = tmp_path / "a.pt"
    assert main(["adapt", *model, "--data", str(labelled), "--unlabelled", str(images),
                 "--rank", "iou", "--out", str(out)]) == 2  # fmt: skip
    assert "has no masks/ to rank by IoU" in capsys.readouterr().err
    # Files that cannot be read are left out, each named: none silently.
    (images / "broken.tif").write_bytes(b"not a TIFF")
    (labelled / "images" / "zbroken.tif").write_bytes((images / "img0.tif").read_bytes())
    (labelled / "masks" / "zbroken.tif").write_bytes(b"not a TIFF either")
    with pytest.warns(UserWarning) as said:
        assert main(["adapt", *model, "--data", str(labelled), "--unlabelled", str(images),
                     "--steps", "2", "--dpo-steps", "1", "--threads", "1",
                     "--out", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "objects like yours in" in err and out.is_file()
    left_out = [str(warning.message) for warning in said]
    for path in (images / "broken.tif", labelled / "masks" / "zbroken.tif"):
        assert any(message.startswith(f"{path} left out: ") for message in left_out)
    assert Adapter.load(out).report["unlabelled"] == int(err.split("found ")[1].split()[0])
