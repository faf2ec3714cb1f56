"""Noticing that a dock was closed.

napari's close button on a dock's title bar takes the widget out of its dock
(``setParent(None)``) without destroying it, so the Qt ``destroyed`` signal alone would leave
its workers running and its key bindings on the layers. :func:`when_closed` calls back on
either.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject


class _Undocked(QObject):
    """Calls ``callback`` when the widget it filters loses the parent it had."""

    def __init__(self, widget: QObject, callback: Callable[[], None]):
        super().__init__(widget)
        self._callback = callback
        self._docked = widget.parent() is not None

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.ParentChange:
            if watched.parent() is not None:
                self._docked = True
            elif self._docked:
                self._callback()
        return False


def when_closed(widget: QObject, callback: Callable[[], None]) -> None:
    """Call ``callback`` once when ``widget`` is closed: taken out of the dock it was in, or
    destroyed. ``callback`` must not be a method of a Qt object (the object may be gone)."""
    called = False

    def once(*_) -> None:
        nonlocal called
        if not called:
            called = True
            callback()

    widget.installEventFilter(_Undocked(widget, once))  # the widget's child: kept with it
    widget.destroyed.connect(once)
