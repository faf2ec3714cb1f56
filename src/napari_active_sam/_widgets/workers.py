"""The one worker host of the docks: every background job starts, reports and stops here.

A job is a function or a generator that yields
:class:`~napari_active_sam.core.progress.Progress` records; napari's ``create_worker``
runs it on a thread so the GUI thread never encodes, decodes, trains or estimates. The
host forwards the job's progress and result to callbacks, cancels it between yields, and
stops caring once its dock is gone: after :meth:`WorkerHost.close` (called when the dock is
closed or destroyed, see :mod:`.closing`) no callback runs and every running job is asked
to quit.

Errors a user can cause (:class:`~napari_active_sam.core.errors.ActiveSamError`) are shown
in the dock's status line and as a napari notification; anything else is raised again on
the GUI thread, as the bug it is.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt

from ..core.errors import ActiveSamError
from ..core.progress import Progress

if TYPE_CHECKING:
    from napari.qt.threading import WorkerBase


CLOSE_WAIT_S = 5.0
"""How long closing a host waits for its jobs to stop (a generator stops at its next step,
a function at its end); a job that takes longer is left to end on its own."""


def report_error(exc: BaseException, status: Callable[[str], None]) -> None:
    """Show an error the user can act on in ``status`` and a notification; raise anything
    else again."""
    status(f"error: {exc}")
    if not isinstance(exc, ActiveSamError):
        raise exc
    show_error(str(exc))


class WorkerHost:
    """Starts background jobs for one dock and keeps their callbacks within its lifetime.

    Parameters
    ----------
    status : callable, optional
        Receives a line for the dock's status bar (error messages).
    busy : callable, optional
        Receives whether a cancellable job is running (to enable a Cancel button).

    Notes
    -----
    The host is a plain Python object, not a Qt one, so that :meth:`close` can still be
    called after the dock's own Qt objects are gone.
    """

    def __init__(
        self,
        status: Callable[[str], None] | None = None,
        busy: Callable[[bool], None] | None = None,
    ):
        self.status = status or (lambda message: None)
        self.busy = busy or (lambda value: None)
        self.closed = False
        self.running: set[WorkerBase] = set()
        self.cancellable: set[WorkerBase] = set()
        self._ends: dict[WorkerBase, threading.Event] = {}

    def start(
        self,
        job: Callable[..., Any],
        *args: Any,
        progress: Callable[[Progress], None] | None = None,
        returned: Callable[[Any], None] | None = None,
        errored: Callable[[Exception], None] | None = None,
        finished: Callable[[], None] | None = None,
        cancellable: bool = False,
        aborted: Callable[[], None] | None = None,
    ) -> WorkerBase | None:
        """Run ``job(*args)`` on a worker thread.

        Parameters
        ----------
        job : callable
            A function, or a generator function yielding ``Progress`` records.
        *args
            Its arguments, as they are (the job runs off the GUI thread: pass copies of
            anything the user may edit meanwhile).
        progress : callable, optional
            Called with each ``Progress`` the job yields.
        returned : callable, optional
            Called with the job's result (not when it was cancelled).
        errored : callable, optional
            Called with the job's exception; :meth:`report` when not given.
        finished : callable, optional
            Called when the job ends, however it ends.
        cancellable : bool
            Whether :meth:`cancel_all` (a Cancel button) stops it; such jobs make the
            host busy while they run.
        aborted : callable, optional
            Called when a generator job stops because it was cancelled (instead of
            ``returned``).

        Returns
        -------
        WorkerBase or None
            The started worker; None once the host is closed (nothing is started then).
        """
        if aborted is not None and not inspect.isgeneratorfunction(job):
            raise TypeError(f"{job.__name__} is no generator: it cannot be cancelled, so "
                            "nothing would call `aborted`.")  # fmt: skip
        if self.closed:
            return None
        worker = create_worker(job, *args, _ignore_errors=True)
        ended = threading.Event()
        # Set in the worker's own thread as its run ends, so close() can wait on it.
        worker.finished.connect(ended.set, Qt.ConnectionType.DirectConnection)
        self._ends[worker] = ended
        slots = {"yielded": progress, "returned": returned, "aborted": aborted,
                 "errored": errored or self.report, "finished": finished}  # fmt: skip
        for signal, callback in slots.items():
            if callback is not None:
                getattr(worker, signal).connect(self._guard(callback))
        self.running.add(worker)
        worker.finished.connect(lambda: self._ended(worker))
        if cancellable:
            self.cancellable.add(worker)
            self.busy(True)
        worker.start()
        return worker

    def cancel(self, worker: WorkerBase | None) -> None:
        """Ask ``worker`` to stop; a generator stops before its next step."""
        if worker is None:
            return
        worker.quit()
        if worker in self.cancellable:
            self.cancellable.discard(worker)
            self.busy(bool(self.cancellable))

    def cancel_all(self) -> None:
        """Ask every cancellable job to stop."""
        for worker in list(self.cancellable):
            self.cancel(worker)

    def report(self, exc: Exception) -> None:
        """:func:`report_error` into this host's status line."""
        report_error(exc, self.status)

    def close(self, *_: Any) -> None:
        """Skip every callback from now on, ask the running workers to quit and wait (at
        most :data:`CLOSE_WAIT_S`) until their jobs have stopped: a job still running when
        a script closes its viewer and ends would signal into deleted Qt objects and
        abort Python."""
        self.closed = True
        for worker in list(self.running):
            worker.quit()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for ended in list(self._ends.values()):
            ended.wait(max(deadline - time.monotonic(), 0.0))

    def _ended(self, worker: WorkerBase) -> None:
        self.running.discard(worker)
        self._ends.pop(worker, None)
        if worker in self.cancellable:
            self.cancellable.discard(worker)
            if not self.closed:
                self.busy(bool(self.cancellable))

    def _guard(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any) -> Any:
            if not self.closed:
                return callback(*args)
            return None

        return guarded


class LatestRequest:
    """One job of a kind at a time; the latest request wins.

    A request while the job runs is remembered, not started: when the job ends, ``start``
    runs once more with the state as it is then, however many requests came meanwhile.

    Parameters
    ----------
    start : callable
        ``start(finished)`` starts the job with ``finished`` as its finished callback and
        returns the worker, or returns None when there is nothing to do.
    """

    def __init__(self, start: Callable[[Callable[[], None]], WorkerBase | None]):
        self._start = start
        self.worker: WorkerBase | None = None
        self._again = False

    @property
    def running(self) -> bool:
        return self.worker is not None

    def request(self) -> None:
        if self.worker is not None:
            self._again = True
            return
        self.worker = self._start(self._finished)

    def _finished(self) -> None:
        self.worker = None
        if self._again:
            self._again = False
            self.request()
