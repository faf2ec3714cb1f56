"""Loading a model and an image into an annotation session, on workers; the latest request wins.

The model is loaded once and kept while the user changes only the image or its window.
Every request gets a ticket; a load or an image read that comes back after a newer request
is dropped, so the session always matches the controls as they are now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.engine.checkpoints import LoadedModel, load_model
from .jobs import make_session
from .layers import full_resolution
from .workers import WorkerHost

if TYPE_CHECKING:
    import napari


@dataclass(frozen=True)
class ModelRequest:
    """A model as chosen in a dock: the chooser's own value, and what ``load_model`` needs."""

    choice: str
    name: str
    checkpoint: Path | None
    device: str


class SessionLoader:
    """Turns the latest (image, model, window) request into a session, off the GUI thread.

    Parameters
    ----------
    workers : WorkerHost
    ready : callable
        Called as ``ready(image, session, quality models, problem or None)`` for the
        latest request only (see :func:`~napari_active_sam._widgets.jobs.make_session`).
    say : callable
        Receives a line for the status bar.
    report : callable
        Shows an error.
    kept : callable
        Called as ``kept(request or None)`` when the latest model could not be loaded: the
        :class:`ModelRequest` of the model still in use (None before any loaded).
    """

    def __init__(self, workers: WorkerHost, ready: Callable, say: Callable[[str], None],
                 report: Callable[[Exception], None],
                 kept: Callable[[ModelRequest | None], None]):  # fmt: skip
        self.workers, self.ready, self.say, self.report = workers, ready, say, report
        self.kept = kept
        self.model: LoadedModel | None = None
        self._loaded: ModelRequest | None = None
        self._ticket = 0

    def request(self, image: napari.layers.Image, model: ModelRequest, window: str,
                store: Path | None = None) -> None:  # fmt: skip
        """Load ``model`` unless it is the one loaded, then read ``image`` with intensity
        ``window`` into a new session, its embeddings kept in the zarr ``store`` if given."""
        self._ticket += 1
        ticket = self._ticket
        if self.model is not None and model == self._loaded:
            self._read_image(image, window, ticket, store)
            return
        self.say(f"loading {model.choice} ...")
        self.workers.start(
            load_model, model.name, model.checkpoint, model.device,
            returned=lambda loaded: self._model_loaded(loaded, model, image, window, ticket,
                                                       store),
            errored=lambda error: self._refused(error, ticket),
        )  # fmt: skip

    def _refused(self, error: Exception, ticket: int) -> None:
        if ticket == self._ticket:  # the model still in use is the one loaded before
            self.kept(self._loaded)
        self.report(error)

    def forget(self) -> None:
        """Drop the requests in flight: what they load or read is not used."""
        self._ticket += 1

    def _model_loaded(self, loaded, model: ModelRequest, image, window: str, ticket: int,
                      store: Path | None):  # fmt: skip
        if ticket != self._ticket:
            return  # the user chose again meanwhile: a newer request is coming
        self.model, self._loaded = loaded, model
        self._read_image(image, window, ticket, store)

    def _read_image(self, image, window: str, ticket: int, store: Path | None) -> None:
        # On a worker: reading a large or lazy volume and its percentiles takes a while.
        self.say("reading the image ...")
        self.workers.start(
            make_session, self.model, full_resolution(image), window, image.rgb,
            self._loaded.checkpoint, store,
            returned=lambda made: self._made(ticket, image, *made),
            errored=self.report,
        )  # fmt: skip

    def _made(self, ticket: int, image, session, quality, problem) -> None:
        if ticket == self._ticket:
            self.ready(image, session, quality, problem)
