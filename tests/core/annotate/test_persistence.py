"""Annotation files: round trip, one atomic switch per save, damaged and unwritable saves."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from napari_active_sam.core.annotate import persistence
from napari_active_sam.core.annotate.persistence import (
    SavedAnnotation,
    load_annotation,
    save_annotation,
)
from napari_active_sam.core.errors import ActiveSamError, AnnotationFileError, SaveError

SAVE = "annotation.npz"


def _temporary(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_round_trip(tmp_path):
    labels = np.zeros((3, 8, 8), np.int32)
    labels[1, 2:4, 2:4] = 5
    saved = SavedAnnotation(labels, np.array([[1, 3.0, 2.5], [2, 1, 1]]),
                            np.array([True, False]), {"model": "demo"})  # fmt: skip
    save_annotation(tmp_path / "a", saved)
    loaded = load_annotation(tmp_path / "a")
    assert np.array_equal(loaded.labels, labels) and loaded.labels.dtype == np.int32
    assert np.array_equal(loaded.points, saved.points)
    assert loaded.positive.tolist() == [True, False] and loaded.settings == {"model": "demo"}
    # Saving again replaces the one file and leaves no temporary file behind.
    save_annotation(tmp_path / "a", SavedAnnotation(labels * 0, np.empty((0, 3)), np.array([])))
    assert not load_annotation(tmp_path / "a").labels.any()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [SAVE]


def test_a_folder_keeps_one_images_annotation_a_save_of_another_is_refused(tmp_path):
    labels = np.zeros((6, 6), np.int32)
    labels[1:3, 1:3] = 1
    mine = SavedAnnotation(labels, np.empty((0, 2)), np.array([], bool), {"image": "ct"})
    save_annotation(tmp_path, mine)
    assert persistence.saved_image(tmp_path) == "ct"
    save_annotation(tmp_path, mine)  # the same image saves again
    theirs = SavedAnnotation(labels * 0, np.empty((0, 2)), np.array([], bool), {"image": "mr"})
    with pytest.raises(SaveError, match="holds the annotation of image 'ct', and this is 'mr'"):
        save_annotation(tmp_path, theirs)
    assert load_annotation(tmp_path).labels.any()  # ct's save is unchanged
    unnamed = SavedAnnotation(labels * 0, np.empty((0, 2)), np.array([], bool))
    save_annotation(tmp_path, unnamed)  # a save that names no image is not told apart
    assert persistence.saved_image(tmp_path) is None
    assert persistence.saved_image(tmp_path / "nothing") is None


def _save_format_1(folder, labels, points, positive, settings=None, **record):
    """Write a save the way version 1 did: ``labels.npy`` and ``annotation.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", labels)
    fields = {"format": "napari-active-sam-annotation/1", "points": points,
              "positive": positive, "settings": settings or {}}  # fmt: skip
    fields.update(record)
    (folder / "annotation.json").write_text(json.dumps(fields))


def test_saves_of_the_first_format_still_load_and_the_next_save_replaces_them(tmp_path):
    labels = np.zeros((4, 5), np.uint16)
    labels[1, 2] = 7
    _save_format_1(tmp_path, labels, [[1.0, 2.0]], [False], {"window": "ct"})
    loaded = load_annotation(tmp_path)
    assert np.array_equal(loaded.labels, labels) and loaded.points.tolist() == [[1.0, 2.0]]
    assert loaded.positive.tolist() == [False] and loaded.settings == {"window": "ct"}
    save_annotation(tmp_path, SavedAnnotation(labels * 2, np.empty((0, 2)), np.array([], bool)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [SAVE]
    assert load_annotation(tmp_path).labels[1, 2] == 14


# A process that saves as fast as it can; labels, prompts and settings all carry the counter.
SAVING_LOOP = """
import sys
import numpy as np
from napari_active_sam.core.annotate.persistence import SavedAnnotation, save_annotation

labels = np.zeros((16, 16), np.int32)
for counter in range(1, 10**9):
    labels[:] = counter
    save_annotation(sys.argv[1], SavedAnnotation(
        labels, np.array([[counter, 0.0]]), np.array([True]), {"counter": counter}))
    if counter == 1:
        print("saved", flush=True)
"""


def test_a_save_killed_at_any_moment_never_mixes_two_saves(tmp_path):
    folder, trials, rng = tmp_path / "a", 40, np.random.default_rng(0)
    mixed, left_behind, done, deadline = 0, 0, 0, time.monotonic() + 30
    while done < trials and time.monotonic() < deadline:
        saver = subprocess.Popen([sys.executable, "-c", SAVING_LOOP, str(folder)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            started = saver.stdout.readline() == b"saved\n"
            time.sleep(rng.uniform(0.0, 0.03))
        finally:
            saver.kill()  # SIGKILL: no cleanup of any kind runs
            _, errors = saver.communicate()
        assert started, errors.decode()
        left_behind += bool(_temporary(folder))
        loaded = load_annotation(folder)
        counters = {int(loaded.labels[0, 0]), int(loaded.points[0, 0]),
                    int(loaded.settings["counter"])}  # fmt: skip
        mixed += len(counters) > 1
        done += 1
    assert done >= 10, f"only {done} saving loops started and were killed in 30 s"
    assert mixed == 0, f"{mixed} of {done} restores mixed two saves"
    save_annotation(folder, SavedAnnotation(np.zeros((2, 2), int), np.empty((0, 2)), []))
    assert _temporary(folder) == [], f"kills left temporary files {left_behind} times"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _rewrite(folder, **members) -> None:
    """Replace (bytes) or drop (None) members of the save's archive, ``.`` written ``_``."""
    path = folder / SAVE
    with zipfile.ZipFile(path) as archive:
        kept = {name: archive.read(name) for name in archive.namelist()}
    kept.update({name.replace("_", "."): data for name, data in members.items()})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in kept.items():
            if data is not None:
                archive.writestr(name, data)


def _record(**fields) -> bytes:
    return json.dumps({"format": persistence.ANNOTATION_FORMAT, "settings": {}, **fields}).encode()


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "truncated file": lambda f: _truncate(f / SAVE),
    "empty file": lambda f: (f / SAVE).write_bytes(b""),
    "not a zip file": lambda f: (f / SAVE).write_text("labels"),
    "invalid JSON": lambda f: _rewrite(f, annotation_json=b'{"format": "napari-'),
    "JSON that is no object": lambda f: _rewrite(f, annotation_json=b"[1, 2]"),
    "no format key": lambda f: _rewrite(f, annotation_json=b'{"settings": {}}'),
    "settings of the wrong type": lambda f: _rewrite(f, annotation_json=_record(settings=[1])),
    "no labels": lambda f: _rewrite(f, labels_npy=None),
    "no prompts": lambda f: _rewrite(f, points_npy=None),
    "no record": lambda f: _rewrite(f, annotation_json=None),
    "truncated labels": lambda f: _rewrite(f, labels_npy=_npy(np.zeros((4, 5), np.int32))[:-9]),
    "labels not integers": lambda f: _rewrite(f, labels_npy=_npy(np.zeros((4, 5)))),
    "labels of Python objects": lambda f: _rewrite(f, labels_npy=_npy(np.array([{}], object))),
    "0-d labels": lambda f: _rewrite(f, labels_npy=_npy(np.array(3))),
    "points of the wrong width": lambda f: _rewrite(f, points_npy=_npy(np.zeros((1, 3)))),
    "points of text": lambda f: _rewrite(f, points_npy=_npy(np.array([["a", "b"]]))),
    "points not finite": lambda f: _rewrite(f, points_npy=_npy(np.array([[np.nan, 1.0]]))),
    "polarity of the wrong length": lambda f: _rewrite(f, positive_npy=_npy(np.ones(2, bool))),
    "polarity not booleans": lambda f: _rewrite(f, positive_npy=_npy(np.array([0.5]))),
    "a folder where the file should be": lambda f: ((f / SAVE).unlink(), (f / SAVE).mkdir()),
    "a file where the folder should be": lambda f: (shutil.rmtree(f), f.write_text("")),
}

DAMAGE_FORMAT_1 = {
    "invalid JSON": lambda f: (f / "annotation.json").write_text('{"points": [[1'),
    "JSON that is no object": lambda f: (f / "annotation.json").write_text('"points"'),
    "no points key": lambda f: (f / "annotation.json").write_text(
        '{"format": "napari-active-sam-annotation/1", "positive": []}'
    ),
    "points of the wrong length": lambda f: _save_format_1(
        f, np.zeros((4, 5), int), [1.0, 2.0, 3.0], [True]
    ),
    "points of text": lambda f: _save_format_1(f, np.zeros((4, 5), int), [["a", "b"]], [True]),
    "points as an object": lambda f: _save_format_1(f, np.zeros((4, 5), int), {"x": 1}, []),
    "polarity of text": lambda f: _save_format_1(f, np.zeros((4, 5), int), [[1, 2]], ["no"]),
    "settings of the wrong type": lambda f: _save_format_1(f, np.zeros((4, 5), int), [], [], "ct"),
    "truncated labels": lambda f: _truncate(f / "labels.npy", 0.9),
    "labels not integers": lambda f: np.save(f / "labels.npy", np.zeros((4, 5))),
}


def _assert_clear(error: pytest.ExceptionInfo, folder) -> None:
    message = str(error.value)
    assert str(folder) in message, message
    assert "choose" in message, message  # it says what to do


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_save_is_an_annotation_file_error(tmp_path, damage):
    folder = tmp_path / "a"
    save_annotation(folder, SavedAnnotation(np.ones((4, 5), np.int32), np.array([[1.0, 2.0]]),
                                            np.array([True]), {"model": "demo"}))  # fmt: skip
    DAMAGE[damage](folder)
    with pytest.raises(AnnotationFileError) as error:
        load_annotation(folder)
    _assert_clear(error, folder)


@pytest.mark.parametrize("damage", DAMAGE_FORMAT_1)
def test_a_damaged_save_of_the_first_format_is_an_annotation_file_error(tmp_path, damage):
    _save_format_1(tmp_path, np.ones((4, 5), np.int32), [[1.0, 2.0]], [True])
    DAMAGE_FORMAT_1[damage](tmp_path)
    with pytest.raises(AnnotationFileError) as error:
        load_annotation(tmp_path)
    _assert_clear(error, tmp_path)


def test_folders_that_hold_no_save_or_a_newer_one(tmp_path):
    with pytest.raises(AnnotationFileError, match="holds no saved annotation") as error:
        load_annotation(tmp_path)
    _assert_clear(error, tmp_path)
    save_annotation(tmp_path, SavedAnnotation(np.ones((2, 2), int), np.empty((0, 2)), []))
    _rewrite(tmp_path, annotation_json=_record(format="napari-active-sam-annotation/99"))
    with pytest.raises(AnnotationFileError, match="cannot read: update") as error:
        load_annotation(tmp_path)
    _assert_clear(error, tmp_path)


def test_a_save_that_cannot_be_written_is_a_save_error_and_keeps_the_last_save(
    tmp_path, monkeypatch
):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SaveError, match="writable folder") as error:
        save_annotation(blocker / "a", SavedAnnotation(np.zeros(2, int), np.empty((0, 1)), []))
    assert f"Nothing was saved to {blocker / 'a'}" in str(error.value)
    assert isinstance(error.value, ActiveSamError)

    folder = tmp_path / "a"
    save_annotation(folder, SavedAnnotation(np.full((2, 2), 4), np.empty((0, 2)), []))

    def disk_full(_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SaveError, match=f"Nothing was saved to {folder}"):
        save_annotation(folder, SavedAnnotation(np.zeros((2, 2), int), np.empty((0, 2)), []))
    monkeypatch.undo()
    assert _temporary(folder) == [] and (load_annotation(folder).labels == 4).all()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="needs a POSIX user that file modes apply to")  # fmt: skip
def test_a_read_only_folder_is_a_save_error_and_keeps_the_last_save(tmp_path):
    save_annotation(tmp_path / "a", SavedAnnotation(np.full((2, 2), 4), np.empty((0, 2)), []))
    (tmp_path / "a").chmod(0o555)
    try:
        with pytest.raises(SaveError, match="writable folder"):
            save_annotation(tmp_path / "a", SavedAnnotation(np.zeros((2, 2), int),
                                                            np.empty((0, 2)), []))  # fmt: skip
        assert (load_annotation(tmp_path / "a").labels == 4).all()
    finally:
        (tmp_path / "a").chmod(0o755)
