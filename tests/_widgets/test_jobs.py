"""Jobs the docks run on workers, run here directly: what each keeps when a save fails."""

from __future__ import annotations

import tempfile

import numpy as np

from napari_active_sam._widgets.jobs import adaptation_job, make_session
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.downloads import CACHE_ENV, cache_dir
from napari_active_sam.core.progress import drain


def test_an_adapter_that_cannot_be_saved_does_not_cost_its_head(tmp_path, monkeypatch):
    """The cache's adapter folder is blocked by a file: the adapter is kept in the fallback
    folder, and the Bayesian head fitted with it is still saved where it belongs."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    model = load_model("demo")  # adapting it on these squares helps: the adapter is kept
    image = np.zeros((128, 128), np.float32)
    labels = np.zeros((128, 128), np.int32)
    for label, (r0, r1, c0, c1) in enumerate(
        [(10, 40, 10, 40), (60, 100, 20, 50), (20, 50, 70, 110), (80, 115, 80, 120)], 1
    ):
        image[r0:r1, c0:c1] = 1
        labels[r0:r1, c0:c1] = label
    session, quality, _ = make_session(model, image, "percentile", False)
    cache_dir().mkdir(parents=True)
    (cache_dir() / "adapter").write_text("a file where the adapter folder would be")
    result = drain(adaptation_job(model, session, labels, quality))
    [kept] = (tmp_path / "tmp").rglob("*.adapter.pt")
    [head] = (cache_dir() / "head").glob("*.head.pt")
    assert str(kept) in result.saved and f"saved {head}" in result.saved
