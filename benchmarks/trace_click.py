"""Trace one BALD click through the package: the calls and the hops between its modules.

The bundled demo model answers one click on a generated CT slice that is already encoded
(as after the dock's background encoding), the way the dock's worker asks:
``AnnotationSession.answer(index, prompts, "bald")``. Every call of a function of the
package is recorded; a *hop* is a call from one of its modules into another. Hops are
counted twice: all of them, and those into functions and methods (leaving out property
reads and the constructors of records). Also counted: encoder runs, slice signatures (the
slice hashed) and ``shown_head`` choices.

Prints JSON.

    python benchmarks/trace_click.py
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
from collections import Counter

import numpy as np

PACKAGE = "napari_active_sam"


def main() -> None:
    from napari_active_sam.core.active.bayes_head import BayesHead
    from napari_active_sam.core.annotate.session import AnnotationSession
    from napari_active_sam.core.data.scenes import make_scene
    from napari_active_sam.core.engine.checkpoints import load_model
    from napari_active_sam.core.engine.preprocess import SliceSource
    from napari_active_sam.core.engine.store import EmbeddingStore
    from napari_active_sam.core.prompts import Click, PromptSet

    model = load_model("demo")
    scene = make_scene("ct", np.random.default_rng(0), model.architecture.img_size)
    session = AnnotationSession(
        model, SliceSource(scene.image, scene.window), EmbeddingStore(model.encoder_id)
    )
    session.head = BayesHead.for_model(model)
    for _ in session.encode([()]):
        pass
    rows, cols = np.nonzero(scene.labels == 1)
    prompts = PromptSet((Click(float(cols[len(cols) // 2]), float(rows[len(rows) // 2])),))

    calls: list[tuple[str, str, str, bool]] = []

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(PACKAGE):
            return
        caller = frame.f_back
        while caller is not None and not caller.f_globals.get("__name__", "").startswith(
            PACKAGE
        ):
            caller = caller.f_back
        source = caller.f_globals["__name__"] if caller is not None else "<caller>"
        name = frame.f_code.co_name
        calls.append((source, module, name, _is_function(frame, name)))

    sys.setprofile(profile)
    try:
        session.answer((), prompts, "bald", rng=np.random.default_rng(0))
    finally:
        sys.setprofile(None)
    names = Counter(name for _, _, name, _ in calls)
    hops = [(a, b, n, f) for a, b, n, f in calls if a != b and a != "<caller>"]
    print(
        json.dumps(
            {
                "calls": len(calls),
                "hops_between_modules": len(hops),
                "hops_into_functions": sum(f for *_, f in hops),
                "modules": len({m for _, m, _, _ in calls}),
                "slice_signature": names["slice_signature"],
                "encoder_runs": names["encode"],
                "shown_head": names["shown_head"],
                "hops": [
                    f"{a.removeprefix(PACKAGE)} -> {b.removeprefix(PACKAGE)}.{n}"
                    + ("" if f else " (property or record)")
                    for a, b, n, f in hops
                ],
            },
            indent=1,
        )
    )


def _is_function(frame, name: str) -> bool:
    """False for a property read or a record's generated constructor."""
    owner = frame.f_locals.get("self")
    if owner is not None:
        attribute = inspect.getattr_static(type(owner), name, None)
        if isinstance(attribute, property | functools.cached_property):
            return False
        if name == "__init__" and dataclasses.is_dataclass(owner):
            return False
    return True


if __name__ == "__main__":
    main()
