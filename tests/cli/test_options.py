"""The command line's choices are the registries' enums, and every member is accepted."""

from __future__ import annotations

import argparse

import pytest

from napari_active_sam.cli import build_parser
from napari_active_sam.cli.options import WINDOWS
from napari_active_sam.core.bench.strategies import STRATEGIES
from napari_active_sam.core.engine.preprocess import CT_PRESETS
from napari_active_sam.core.engine.registry import MODELS
from napari_active_sam.core.enums import (
    Estimator,
    HessianStructure,
    ModelName,
    PriorMethod,
    SceneKind,
    Strategy,
)
from napari_active_sam.core.quality.estimators import ESTIMATORS


def _choices(command: str, option: str) -> list[str]:
    sub = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices[command]
    (action,) = [a for a in sub._actions if option in a.option_strings]
    return [str(c) for c in action.choices]


@pytest.mark.parametrize(
    ("command", "option", "members"),
    [
        ("quality", "--estimator", list(Estimator)),
        ("train-head", "--structure", list(HessianStructure)),
        ("train-head", "--prior", list(PriorMethod)),
        ("make-dataset", "--kind", list(SceneKind)),
        ("train-quality", "--kind", ["all", *SceneKind]),
        ("precompute", "--window", ["percentile", *CT_PRESETS]),
    ],
)
def test_choices_are_the_enums_members(command, option, members):
    assert _choices(command, option) == [str(m) for m in members]


def test_every_registry_covers_its_enum():
    assert set(MODELS) == set(ModelName)
    assert set(STRATEGIES) == set(Strategy)
    assert set(ESTIMATORS) == set(Estimator)
    assert list(WINDOWS) == ["percentile", *CT_PRESETS]


@pytest.mark.parametrize("estimator", list(Estimator))
def test_every_estimator_parses(estimator, tmp_path):
    args = build_parser().parse_args(
        ["quality", "--images", str(tmp_path), "--masks", str(tmp_path),
         "--out", str(tmp_path / "q.csv"), "--estimator", str(estimator)]
    )  # fmt: skip
    assert args.estimator == estimator


def test_an_unknown_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["make-dataset", "--out", "x", "--kind", "mri"])
    assert exit_.value.code == 2 and "invalid choice: 'mri'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["benchmark", "--data", ".", "--out", "o", "--workers", "-1"], "give 1 or more"),
        (["benchmark", "--data", ".", "--out", "o", "--workers", "0"], "give 1 or more"),
        (["benchmark", "--data", ".", "--out", "o", "--limit", "0"], "give 1 or more"),
        (["benchmark", "--data", ".", "--out", "o", "--strategies", ","], "at least one"),
        (["benchmark", "--data", ".", "--out", "o", "--strategies", "bald,x"], "Unknown strategy"),
        (["benchmark", "--data", "missing-folder", "--out", "o"], "is not a folder"),
        (["make-dataset", "--out", "o", "--size", "0"], "give 1 or more"),
        (["train-head", "--threads", "-2"], "give 1 or more"),
        (["train-head", "--images", "0"], "give 1 or more"),
        (["train-head", "--checkpoint", "missing.pt"], "is not a file"),
        (["quality", "--images", ".", "--masks", ".", "--out", "q.csv", "--head", "no.pt"],
         "is not a file"),  # fmt: skip
        (["train-demo-model", "--out", "m.pt", "--steps", "two"], "not a whole number"),
        (["train-demo-model", "--out", "m.pt", "--learning-rate", "0"], "give a number above 0"),
        (["train-demo-model", "--out", "m.pt", "--learning-rate", "fast"], "is not a number"),
        (["train-demo-model", "--out", "m.pt", "--learning-rate", "inf"], "give a number above 0"),
        (["train-demo-model", "--out", "m.pt", "--checkpoint-every", "-5"], "above 0"),
        (["train-demo-model", "--out", "m.pt", "--checkpoint-every", "nan"], "above 0"),
        (["train-demo-model", "--out", "m.pt", "--encoder-depth", "0"], "give 1 or more"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_an_unreachable_scheduler_and_no_workers_are_clear_errors():
    from napari_active_sam.core.cluster import dask_client
    from napari_active_sam.core.errors import ActiveSamError

    unreachable = dask_client("tcp://127.0.0.1:9", None)  # port 9: nothing listens
    with pytest.raises(ActiveSamError, match="Could not reach the dask scheduler"), unreachable:
        pass
    with pytest.raises(ActiveSamError, match="0 workers cannot run"), dask_client(None, 0):
        pass


def test_a_path_the_system_refuses_is_a_one_line_error(tmp_path, capsys):
    from napari_active_sam.cli import main

    (tmp_path / "a-file").write_text("")
    assert main(["make-dataset", "--out", str(tmp_path / "a-file" / "ds"), "--n", "1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("napari-active-sam: error:") and "Traceback" not in err
    assert "check the path" in err


def test_unknown_choices_are_listed_by_their_names(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["make-dataset", "--out", "o", "--kind", "bogus"])
    assert "'ct'" in capsys.readouterr().err


def test_zoom_scales_parse_and_refuse_what_is_not_a_scale():
    from napari_active_sam.cli.options import scale_list

    assert scale_list("1,2") == (1.0, 2.0) and scale_list("1") == (1.0,)
    for bad in ("", "0.5,2", "two", "nan", "1,inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="scales|numbers"):
            scale_list(bad)
