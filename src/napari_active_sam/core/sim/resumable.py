"""The resumable state of a training run: where it is kept, how it is written, and the
checks that keep a run from writing over a finished model or an interrupted run's state."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ActiveSamError, CheckpointError
from ..keeping import written_whole


def resume_path(out: Path) -> Path:
    """Where a run writing ``out`` keeps its resumable state: ``out`` + ``.resume``."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


def save_state_file(path: Path, state: dict) -> None:
    """Write the resumable state atomically (a kill mid-write keeps the previous one)."""
    written_whole(lambda partial: torch.save(state, partial), path)


def check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before any training, a run that would write over what the user has: a
    finished checkpoint (unless ``overwrite``), an interrupted run's state (unless
    resumed), or a folder; and a resume with nothing to resume."""
    state = resume_path(out)
    if out.is_dir():
        raise ActiveSamError(f"{out} is a folder: give the checkpoint file to write, such as "
                             f"{out / 'model.pt'}.")  # fmt: skip
    if resume and not state.is_file():
        done = f"{out} is a finished model" if out.is_file() else f"{out} was never started"
        raise ActiveSamError(f"Nothing to resume: {done} and {state} holds no interrupted "
                             "run. Train without --resume, into a new --out.")  # fmt: skip
    if not resume and state.is_file():
        raise ActiveSamError(
            f"{state} holds an interrupted run of {out}: --resume continues it; delete that "
            "file to start afresh."
        )
    if not resume and out.exists() and not overwrite:
        raise ActiveSamError(f"{out} exists: choose a new --out, or replace it with "
                             "--overwrite.")  # fmt: skip


def resumed_state(out: Path, seed: int, config: dict, kind: str) -> dict | None:
    """The state a killed run of the same settings (``seed``, the training ``config`` as a
    dict, scene ``kind``) left, or None."""
    path = resume_path(out)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path} cannot be read ({exc}): delete it to start afresh.") from exc
    saved = {"seed": state.get("seed"), "kind": state.get("kind"), **(state.get("config") or {})}
    asked = {"seed": seed, "kind": kind, **config}
    for free in PACE_SETTINGS:  # how often states are saved, how data is made: not results
        saved.pop(free, None), asked.pop(free, None)
    changed = sorted(k for k in saved.keys() | asked.keys() if saved.get(k) != asked.get(k))
    if changed:
        was = ", ".join(f"{k} {saved.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"{path} is a run with other settings ({was}): resume with those settings, or "
            "delete it to start afresh."
        )
    return state


PACE_SETTINGS = ("checkpoint_every_s", "data_workers", "click_threads")
"""Training settings that change how fast a run goes and how often it saves, not what it
learns: a run resumes with other values of them."""
