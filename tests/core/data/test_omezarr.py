"""OME-Zarr images written with ome-zarr-py: read lazily with their scale, annotated slice
by slice, labels written next to them, encoded by precompute; bad folders refused."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Label, Reader
from ome_zarr.writer import write_image

from napari_active_sam.cli.main import main
from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.data.datasets import discover_pairs, load_pair
from napari_active_sam.core.data.files import read_image
from napari_active_sam.core.data.omezarr import write_ome_zarr_labels
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.preprocess import IntensityWindow, SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.errors import ImageError
from napari_active_sam.core.prompts import Click, PromptSet
from napari_active_sam.io import napari_get_reader

SCALE = {"z": 2.5, "y": 0.8, "x": 0.8}


@pytest.fixture
def ome_ct(tmp_path, sample_ct):
    """Eight slices of the sample CT as an OME-Zarr image (two levels, 2.5 × 0.8 × 0.8)."""
    volume, organs, _ = sample_ct
    path = tmp_path / "ct.ome.zarr"
    write_image(volume[8:16], zarr.open_group(str(path), mode="w"), axes="zyx",
                scale_factors=(2,), scale=SCALE)  # fmt: skip
    return path, volume[8:16], organs[8:16]


def test_read_lazily_with_the_scale_and_annotate_a_slice(ome_ct):
    path, volume, organs = ome_ct
    image = read_image(path)
    assert not isinstance(image.data, np.ndarray)  # a dask array: nothing read yet
    assert image.data.shape == volume.shape and image.scale == (2.5, 0.8, 0.8)
    source = SliceSource(image.data, IntensityWindow.ct("soft_tissue"))
    np.testing.assert_array_equal(source.raw_slice((3,)), volume[3])
    model = load_model("demo", device="cpu")
    session = AnnotationSession(model, source, EmbeddingStore(model.encoder_id))
    rows, cols = np.nonzero(organs[3] == 1)
    click = Click(float(np.median(cols)), float(np.median(rows)), True)
    answer = session.answer((3,), PromptSet((click,)))
    eager = AnnotationSession(model, SliceSource(volume, IntensityWindow.ct("soft_tissue")),
                              EmbeddingStore(model.encoder_id))  # fmt: skip
    np.testing.assert_array_equal(answer.mask, eager.answer((3,), PromptSet((click,))).mask)


def test_napari_opens_it_lazily_at_its_scale(ome_ct):
    path, volume, _ = ome_ct
    [(data, meta, kind)] = napari_get_reader(str(path))(str(path))
    assert kind == "image" and not isinstance(data, np.ndarray)
    assert meta["scale"] == (2.5, 0.8, 0.8) and data.shape == volume.shape


def test_percentiles_of_a_lazy_volume_come_from_a_sample_of_slices(ome_ct):
    path, volume, _ = ome_ct
    lazy = SliceSource(read_image(path).data).limits()
    eager = SliceSource(volume).limits()
    assert lazy == pytest.approx(eager, rel=0.05)


def test_labels_go_next_to_the_image_as_ome_zarr_labels(ome_ct):
    path, _, organs = ome_ct
    written = write_ome_zarr_labels(path, organs, name="organs")
    assert written == path / "labels" / "organs"
    nodes = list(Reader(parse_url(str(path)))())
    [labels] = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    np.testing.assert_array_equal(np.asarray(labels.data[0]), organs)
    with pytest.raises(ImageError, match="labels have shape"):
        write_ome_zarr_labels(path, organs[:2])


def test_folders_that_are_not_one_ome_zarr_image_are_refused(tmp_path, sample_ct):
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("data", shape=(4, 4), dtype="u1")
    with pytest.raises(ImageError, match="no multiscales"):
        read_image(plain)
    bare = tmp_path / "bare.ome.zarr"
    zarr.open_group(str(bare), mode="w").attrs["ome"] = {"version": "0.5"}
    with pytest.raises(ImageError, match="no multiscales"):
        read_image(bare)
    channels = tmp_path / "channels.ome.zarr"
    data = np.zeros((2, 4, 32, 32), np.uint16)
    write_image(data, zarr.open_group(str(channels), mode="w"), axes="czyx",
                scale_factors=())  # fmt: skip
    with pytest.raises(ImageError, match="2 along its 'c' axis"):
        read_image(channels)


def test_precompute_encodes_an_ome_zarr_image(ome_ct, tmp_path, tiny_checkpoint):
    path, volume, _ = ome_ct
    out = tmp_path / "store.zarr"
    assert main(["precompute", str(path), "--model", "tiny", "--checkpoint",
                 str(tiny_checkpoint), "--out", str(out), "--workers", "1"]) == 0  # fmt: skip
    assert sorted(zarr.open_group(str(out)).array_keys()) == [f"{z:04d}" for z in range(8)]


def test_export_writes_ome_zarr_labels_from_the_command_line(ome_ct, tmp_path, capsys):
    path, _, organs = ome_ct
    tifffile.imwrite(tmp_path / "organs.tif", organs, photometric="minisblack")
    command = ["export", "--image", str(path), "--labels", str(tmp_path / "organs.tif"),
               "--format", "ome-zarr", "--out"]  # fmt: skip
    assert main([*command, "organs"]) == 0
    assert f"objects written to {path / 'labels' / 'organs'}" in capsys.readouterr().err
    nodes = list(Reader(parse_url(str(path)))())
    [labels] = [n for n in nodes if any(isinstance(s, Label) for s in n.specs)]
    np.testing.assert_array_equal(np.asarray(labels.data[0]), organs)
    # Labels of that name are kept unless replaced on purpose; a name must be plain.
    assert main([*command, "organs"]) == 2
    assert "already holds labels named 'organs'" in capsys.readouterr().err
    assert main([*command, ".."]) == 2
    assert "cannot name labels" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "organs.tif", organs * 0, photometric="minisblack")
    assert main([*command, "organs", "--overwrite"]) == 0
    [labels] = [n for n in Reader(parse_url(str(path)))() if any(isinstance(s, Label)
                                                                for s in n.specs)]  # fmt: skip
    assert not np.asarray(labels.data[0]).any()


def test_the_benchmark_pairs_an_ome_zarr_image_with_its_mask(ome_ct, tmp_path):
    path, _, organs = ome_ct
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    path.rename(data / "images" / "ct.ome.zarr")
    tifffile.imwrite(data / "masks" / "ct.tif", organs, photometric="minisblack")
    [pair], skipped = discover_pairs(data)
    assert pair.stem == "ct" and not skipped
    source, labels = load_pair(pair, IntensityWindow.ct("soft_tissue"))
    assert not isinstance(source.data, np.ndarray)  # still lazy
    np.testing.assert_array_equal(labels, organs)


def _damaged(path, change) -> None:
    """Rewrite the first multiscale's metadata of the OME-Zarr image at ``path``."""
    group = zarr.open_group(str(path), mode="a")
    ome = dict(group.attrs["ome"])
    change(ome["multiscales"][0])
    group.attrs["ome"] = ome


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(axes=m["axes"][1:]), "names 2 axes and 3 scale values"),
        (lambda m: m["datasets"][0]["coordinateTransformations"][0].update(scale=[1.0, 1.0]),
         "names 3 axes and 2 scale values"),
        (lambda m: m.update(datasets=[]), "cannot be read as an OME-Zarr image"),
        (lambda m: m["datasets"][0]["coordinateTransformations"][0].update(scale=["a", 1, 1]),
         "cannot be read as an OME-Zarr image"),
        (lambda m: m["datasets"][0].update(coordinateTransformations=["scale"]),
         "cannot be read as an OME-Zarr image"),
    ],
)  # fmt: skip
def test_metadata_that_does_not_fit_the_image_is_refused(ome_ct, change, message):
    path, _, _ = ome_ct
    _damaged(path, change)
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_multiscales_of_another_shape_and_an_empty_image_are_refused(ome_ct, tmp_path):
    path, _, _ = ome_ct
    group = zarr.open_group(str(path), mode="a")
    ome = dict(group.attrs["ome"])
    ome["multiscales"] = ome["multiscales"][0]  # an object, not a list of them
    group.attrs["ome"] = ome
    with pytest.raises(ImageError, match="cannot be read as an OME-Zarr image"):
        napari_get_reader(str(path))(str(path))
    empty = tmp_path / "empty.ome.zarr"
    write_image(np.zeros((4, 16, 8), np.uint8), zarr.open_group(str(empty), mode="w"),
                axes="zyx", scale_factors=())  # fmt: skip
    level = zarr.open_group(str(empty), mode="a").attrs["ome"]["multiscales"][0]["datasets"][0]
    zarr.open_array(str(empty / level["path"]), mode="a").resize((4, 16, 0))  # no pixels
    with pytest.raises(ImageError, match=r"empty image \(4, 16, 0\)"):
        read_image(empty)
    complex_values = tmp_path / "complex.ome.zarr"
    write_image(np.ones((4, 16, 8), np.complex64), zarr.open_group(str(complex_values), mode="w"),
                axes="zyx", scale_factors=())  # fmt: skip
    with pytest.raises(ImageError, match="complex values"):
        read_image(complex_values)


def test_a_scale_that_is_no_size_is_replaced_and_not_counted_as_known(ome_ct):
    path, _, _ = ome_ct
    assert read_image(path).spacing_known
    _damaged(path, lambda m: m["datasets"][0]["coordinateTransformations"][0].update(
        scale=[-2.0, 0.0, 0.5]))  # fmt: skip
    with pytest.warns(UserWarning, match="not a positive size"):
        image = read_image(path)
    assert image.scale == (1.0, 1.0, 1.0) and not image.spacing_known


def test_convert_keeps_a_tiffs_pixel_size_and_never_writes_over_a_folder(tmp_path, capsys):
    """An ImageJ TIFF's sizes (µm) reach the OME-Zarr copy in mm; `--out` naming a folder
    that holds files, or a file, is refused with nothing written there; a damaged file is
    a clear error, not a traceback."""
    volume = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    source = tmp_path / "cells.tif"
    tifffile.imwrite(source, volume, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})  # fmt: skip
    out = tmp_path / "cells.ome.zarr"
    assert main(["convert", str(source), "--out", str(out)]) == 0
    copy = read_image(out)
    assert copy.scale == pytest.approx((2e-3, 5e-4, 5e-4)) and copy.spacing_known

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("kept")
    assert main(["convert", str(source), "--out", str(mine)]) != 0
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert main(["convert", str(source), "--out", str(mine / "notes.txt")]) != 0
    assert (mine / "notes.txt").read_text() == "kept"

    for name in ("empty.tif", "empty.nii.gz"):
        (tmp_path / name).write_bytes(b"")
        assert main(["convert", str(tmp_path / name), "--out", str(tmp_path / f"{name}.zarr")]) != 0
        assert "could not be converted" in capsys.readouterr().err


def test_labels_written_over_stay_until_the_new_ones_are_whole(ome_ct, monkeypatch):
    import ome_zarr.writer

    path, volume, organs = ome_ct
    labels = organs.astype(np.int64)
    labels[labels == 7] = 2**31 + 1  # past int32: kept as it is, not wrapped round
    written = write_ome_zarr_labels(path, labels, "organs")
    with pytest.raises(ImageError, match="shape"):
        write_ome_zarr_labels(path, labels[:2], "organs", overwrite=True)
    real_write = ome_zarr.writer.write_labels

    def disk_full(*args, **kwargs):
        real_write(*args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ome_zarr.writer, "write_labels", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_ome_zarr_labels(path, np.zeros_like(labels), "organs", overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(written / "s0"))), labels)
    write_ome_zarr_labels(path, labels // 2, "organs", overwrite=True)
    group = zarr.open_group(str(path / "labels"), mode="r")
    assert group.attrs["ome"]["labels"] == ["organs"]  # listed once however often written
    assert sorted(p.name for p in (path / "labels").iterdir()) == ["organs", "zarr.json"]
    for name in ("zarr.json", "a\x00b", "a\x01b", ".hidden"):
        with pytest.raises(ImageError, match="cannot name labels"):
            write_ome_zarr_labels(path, labels, name, overwrite=True)
    with pytest.raises(ImageError, match="whole numbers"):
        write_ome_zarr_labels(path, labels.astype(float), "floats")
    with pytest.raises(ImageError, match="does not exist"):
        write_ome_zarr_labels(path.with_name("moved.ome.zarr"), labels, "organs")
