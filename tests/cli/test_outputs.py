"""Commands never write over what the user has: outputs that exist, inputs, folders of
other files, results of other data; and bad numbers are refused before anything runs."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_active_sam.cli.main import main
from napari_active_sam.core.data.scenes import make_scene


@pytest.fixture
def cells(tmp_path):
    """A nuclei scene as images/cells.tif and masks/cells.tif."""
    scene = make_scene("nuclei", np.random.default_rng(4), 128)
    for part, array in (("images", scene.image), ("masks", scene.labels.astype(np.uint16))):
        (tmp_path / part).mkdir()
        tifffile.imwrite(tmp_path / part / "cells.tif", array)
    return tmp_path


def test_a_csv_never_replaces_an_input_or_a_file_without_overwrite(cells, capsys):
    """`quality` and `measure` refuse an --out that is an input, not a .csv, or a file that
    exists (unless --overwrite), before computing anything; the files stay as they were."""
    mask = cells / "masks" / "cells.tif"
    before = mask.read_bytes()
    quality = ["quality", "--images", str(cells / "images"), "--masks", str(cells / "masks"),
               "--estimator", "iou_head"]  # fmt: skip
    assert main([*quality, "--out", str(mask)]) == 2
    assert "should end in .csv" in capsys.readouterr().err
    measure = ["measure", "--image", str(cells / "images" / "cells.tif"), "--labels", str(mask),
               "--samples", "4", "--level", "0.5"]  # fmt: skip
    assert main([*measure, "--out", str(mask)]) == 2
    assert "is one of this command's inputs" in capsys.readouterr().err
    assert mask.read_bytes() == before

    ranked = cells / "ranked.csv"
    assert main([*quality, "--out", str(ranked)]) == 0
    first = ranked.read_text()
    ranked.write_text("my notes")
    assert main([*quality, "--out", str(ranked)]) == 2
    assert "exists: choose a new file, or replace it with --overwrite" in capsys.readouterr().err
    assert ranked.read_text() == "my notes"
    assert main([*quality, "--out", str(ranked), "--overwrite"]) == 0
    assert ranked.read_text() == first

    measured = cells / "measured.csv"
    assert main([*measure, "--out", str(measured)]) == 0
    # A 2D image's objects are areas: in pixels here, as the TIFF states no pixel size.
    said = capsys.readouterr().err
    assert " pixels (" in said and "mm²" not in said
    assert "volume_pixels" in measured.read_text().splitlines()[0]


def test_data_sets_go_into_new_folders_of_sizes_that_can_be_drawn(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my own notes")
    for command in (["make-dataset", "--n", "1", "--size", "64"], ["make-real-dataset"]):
        assert main([*command, "--out", str(mine)]) == 2
        assert "not an empty folder: nothing was written" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["README.md"]
    assert main(["make-dataset", "--out", str(tmp_path / "tiny"), "--size", "16"]) == 2
    assert "at least 32 pixels wide" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()
    with pytest.raises(SystemExit):
        main(["make-dataset", "--out", str(tmp_path / "neg"), "--seed", "-1"])
    assert "give 0 or more" in capsys.readouterr().err


def test_a_benchmark_resumes_only_on_the_same_data_and_writes_only_its_own_folder(
    tmp_path, tiny_checkpoint, capsys
):
    data, out = tmp_path / "data", tmp_path / "results"
    made = ["make-dataset", "--out", str(data), "--n", "1", "--kind", "nuclei", "--size", "128"]
    assert main(made) == 0
    run = ["benchmark", "--data", str(data), "--model", "tiny", "--checkpoint",
           str(tiny_checkpoint), "--strategies", "ritm", "--clicks", "2", "--workers", "1",
           "--limit", "1"]  # fmt: skip
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my report")
    assert main([*run, "--out", str(mine)]) == 2
    assert "holds files of no benchmark run" in capsys.readouterr().err
    assert (mine / "report.md").read_text() == "my report"

    assert main([*run, "--out", str(out)]) == 0
    identity = json.loads((out / "run.json").read_text())
    assert identity["zoom_scales"] == [1.0]  # how a lone click is decoded: a run made
    # otherwise does not resume here
    for part in ("images", "masks"):  # the data set made again, other scenes by the same names
        for path in (data / part).iterdir():
            path.unlink()
        (data / part).rmdir()
    (data / "objects.json").unlink()
    assert main([*made, "--seed", "9"]) == 0
    assert main([*run, "--out", str(out)]) == 2
    assert "another benchmark run (different files)" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text()) == identity


def test_precompute_refuses_images_that_would_share_a_store(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    tifffile.imwrite(folder / "a.tif", image)
    iio.imwrite(folder / "a.png", image)
    code = main(["precompute", str(folder), "--model", "tiny", "--checkpoint",
                 str(tiny_checkpoint), "--out", str(tmp_path / "stores"),
                 "--workers", "1"])  # fmt: skip
    assert code == 2 and "a.png and a.tif would share one store" in capsys.readouterr().err
    assert not (tmp_path / "stores").exists()
