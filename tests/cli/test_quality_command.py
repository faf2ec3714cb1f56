"""`napari-active-sam quality`: rank another tool's masks without ground truth."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_active_sam.cli import main
from napari_active_sam.core.data.scenes import make_scene
from napari_active_sam.core.quality.networks import (
    CropQualityNet,
    FeatureQualityNet,
    QualityRegressor,
)


def _read(path):
    with open(path, newline="") as handle:
        header = handle.readline().strip()
        handle.seek(0)
        return header, list(csv.DictReader(handle))


def test_quality_ranks_every_object_of_2d_and_3d_masks_worst_first(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(42)
    scene = make_scene("nuclei", rng, 256)
    labels = scene.labels.copy()
    wrong = int(labels.max()) + 1
    labels[200:240, 10:50][labels[200:240, 10:50] == 0] = wrong  # a "nucleus" on background
    tifffile.imwrite(images / "cells.tif", scene.image)
    tifffile.imwrite(masks / "cells.tif", labels.astype(np.uint16))
    slices = [make_scene("ct", rng, 256) for _ in range(2)]
    tifffile.imwrite(images / "ct.tif", np.stack([s.image for s in slices]))
    volume_labels = np.stack([s.labels == 1 for s in slices]).astype(np.uint8)
    tifffile.imwrite(masks / "ct.tif", volume_labels)
    tifffile.imwrite(images / "lonely.tif", scene.image)  # no mask: skipped
    tifffile.imwrite(images / "small.tif", scene.image)
    tifffile.imwrite(masks / "small.tif", labels[:100, :100].astype(np.uint16))  # wrong shape
    out = tmp_path / "ranking.csv"

    args = ["quality", "--images", str(images), "--masks", str(masks), "--out", str(out),
            "--estimator", "iou_head", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "lonely.tif" in err and "image with no mask" in err
    assert "small.tif" in err and "must match their image" in err
    header, rows = _read(out)
    assert header == "file,label,slice,predicted_dice,estimator"
    cells = [r for r in rows if r["file"] == str(masks / "cells.tif")]
    ct = [r for r in rows if r["file"] == str(masks / "ct.tif")]
    assert len(rows) == len(cells) + len(ct)
    assert sorted(int(r["label"]) for r in cells) == sorted(np.unique(labels[labels > 0]))
    assert all(r["slice"] == "" for r in cells)
    assert sorted(r["slice"] for r in ct) == ["0", "1"] and {r["label"] for r in ct} == {"1"}
    assert all(r["estimator"] == "iou_head" for r in rows)
    values = [float(r["predicted_dice"]) for r in rows]
    assert values == sorted(values) and all(0 <= v <= 1 for v in values)
    by_label = {int(r["label"]): float(r["predicted_dice"]) for r in cells}
    assert by_label[wrong] < np.median(list(by_label.values()))

    assert main([*args[:-4], "--estimator", "regressor", "--overwrite"]) == 0
    _, learned = _read(out)
    assert {r["estimator"] for r in learned} == {"regressor"} and len(learned) == len(rows)


def test_quality_without_pairs_or_with_a_foreign_regressor_is_a_clear_error(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    tifffile.imwrite(images / "a.tif", np.zeros((32, 32), np.uint8))
    code = main(["quality", "--images", str(images), "--masks", str(masks),
                 "--out", str(tmp_path / "q.csv")])  # fmt: skip
    assert code == 2
    assert "has a mask of the same name" in capsys.readouterr().err
    tifffile.imwrite(masks / "a.tif", np.zeros((32, 32), np.uint8))
    code = main(["quality", "--images", str(images), "--masks", str(masks),
                 "--out", str(tmp_path / "q.csv")])  # fmt: skip
    assert code == 2
    assert "masks/a.tif contains no object" in capsys.readouterr().err
    # The file that cannot be read is named as the image (or mask) it is, with its folder.
    tifffile.imwrite(masks / "a.tif", np.ones((32, 32), np.uint8))
    (images / "a.tif").write_text("not a TIFF")
    code = main(["quality", "--images", str(images), "--masks", str(masks),
                 "--out", str(tmp_path / "q.csv")])  # fmt: skip
    assert code == 2 and "the image images/a.tif:" in capsys.readouterr().err
    tifffile.imwrite(images / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(masks / "a.tif", -np.ones((32, 32), np.int8))
    code = main(["quality", "--images", str(images), "--masks", str(masks),
                 "--out", str(tmp_path / "q.csv")])  # fmt: skip
    assert code == 2 and "holds negative values (down to -1)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse refuses it before any work
        main(["quality", "--images", str(images), "--masks", str(tmp_path / "nowhere"),
              "--out", str(tmp_path / "q.csv")])  # fmt: skip
    assert refused.value.code == 2 and "is not a folder" in capsys.readouterr().err
    foreign = QualityRegressor(CropQualityNet(), FeatureQualityNet(8), "other@0123456789abcdef")
    path = foreign.save(tmp_path / "other.quality.pt")
    code = main(["quality", "--images", str(images), "--masks", str(masks),
                 "--out", str(tmp_path / "q.csv"), "--regressor", str(path)])  # fmt: skip
    assert code == 2 and "trained for model other@0123456789abcdef" in capsys.readouterr().err


def test_a_ranking_that_cannot_be_written_is_kept_and_said(tmp_path, capsys, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    scene = make_scene("nuclei", np.random.default_rng(1), 128)
    tifffile.imwrite(images / "cells.tif", scene.image)
    tifffile.imwrite(masks / "cells.tif", scene.labels.astype(np.uint16))
    (tmp_path / "report").write_text("a file where a folder was meant")
    out = tmp_path / "report" / "ranking.csv"  # under a file: cannot be written
    args = ["quality", "--images", str(images), "--masks", str(masks), "--out", str(out),
            "--estimator", "iou_head", "--threads", "1"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    [kept] = (tmp_path / "tmp").glob("napari-active-sam-*/unsaved/*ranking.csv")
    assert "Could not write the ranking" in err and str(kept) in err
    _, rows = _read(kept)
    assert len(rows) == len(np.unique(scene.labels)) - 1
