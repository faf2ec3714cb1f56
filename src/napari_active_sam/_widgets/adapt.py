"""Adaptation in the dock: adapt the model to the committed objects, see what it changed,
switch between the base model and the adapted one; find objects like the committed ones on
the slice on screen and accept those the quality estimate trusts.

The adaptation runs on a worker (cancel with the dock's Cancel); the figure shown is the
mean IoU after one click on committed objects held out of training, before and after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt

from .adaptation import NOT_IMPROVED, describe
from .layers import INSIDE_COLOUR

if TYPE_CHECKING:
    from .controller import AnnotationController

BASE, ADAPTED = "base model", "adapted to my objects"
"""The choices of the panel's model switch."""


class AdaptPanel(Container):
    """Adaptation controls of the Active SAM dock.

    Parameters
    ----------
    controller : AnnotationController
        Runs the adaptation and swaps the model; its ``adapted`` and ``session_ready``
        events update the panel.
    """

    def __init__(self, controller: AnnotationController):
        super().__init__(label="adapt")
        self.controller = controller
        self.adapt_button = PushButton(text="Adapt the model to my objects")
        self.decode_with = ComboBox(label="decode with", choices=[BASE], value=BASE)
        self.result = Label(value="commit two or more objects, then adapt")
        self.result.native.setWordWrap(True)  # the figures after adapting run long
        self.find_button = PushButton(text="Find objects like mine on this slice")
        self.accept_above = FloatSpinBox(label="accept above", value=0.8, min=0.0, max=1.0,
                                         step=0.05)  # fmt: skip
        self.accept_button = PushButton(text="Accept candidates", enabled=False)
        self.rank_button = PushButton(text="Rank the first one's masks myself", enabled=False)
        self.extend([self.adapt_button, self.decode_with, self.result, self.find_button,
                     self.accept_above, self.accept_button, self.rank_button])  # fmt: skip
        self.ranking = RankingView(controller)
        self.native.layout().addWidget(self.ranking.canvas)
        self.adapt_button.changed.connect(self.adapt)
        self.decode_with.changed.connect(self._switch)
        self.find_button.changed.connect(self.find_similar)
        self.accept_button.changed.connect(self.accept)
        self.rank_button.changed.connect(controller.rank_candidate)
        controller.events.to_rank.connect(lambda event: self.ranking.show(event.candidates))
        controller.events.adapted.connect(self._adapted)
        controller.events.adapter_found.connect(self._found)
        controller.events.not_adapted.connect(self._not_adapted)
        controller.events.session_ready.connect(self._session_ready)
        controller.events.candidates.connect(self._candidates)

    def adapt(self) -> None:
        """Start adapting (on a worker)."""
        self.controller.adapt()

    def find_similar(self) -> None:
        """Search the slice on screen for objects like the committed ones (on a worker)."""
        self.controller.objects.find_similar(self.controller.current_index())

    def accept(self) -> list[int]:
        """Commit the candidates whose predicted Dice reaches *accept above*."""
        return self.controller.objects.accept_candidates(self.accept_above.value)

    def _candidates(self, event) -> None:
        self.accept_button.enabled = self.rank_button.enabled = event.count > 0
        self.accept_button.text = f"Accept candidates ({event.count} on offer)"

    def _adapted(self, event) -> None:
        self.result.value = describe(event.adaptation)
        self.decode_with.choices = [BASE, ADAPTED]
        self.decode_with.value = ADAPTED

    def _not_adapted(self, event) -> None:
        self.result.value = f"{describe(event.adaptation)}: {NOT_IMPROVED}"

    def _found(self, event) -> None:
        self.decode_with.choices = [BASE, ADAPTED]
        self.result.value = f"your earlier adaptation is available: {describe(event.adaptation)}"

    def _session_ready(self, event) -> None:
        self.ranking.clear()
        self.decode_with.choices = [BASE]
        self.decode_with.value = BASE
        self.result.value = "commit two or more objects, then adapt"

    def _switch(self, choice: str) -> None:
        adapted = choice == ADAPTED
        if adapted != self.controller.adaptation.using_adapted:
            self.controller.use_adapted(adapted)


class RankingView:
    """The four candidate masks of one object side by side, ranked with the keys 1-4.

    Press the numbers in order of preference, best first; after three the order is complete
    and the controller keeps it (``ranked``). The view shows the object's window of the
    image with each mask outlined.
    """

    def __init__(self, controller: AnnotationController):
        self.controller = controller
        self.figure = Figure(figsize=(4, 1.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.canvas.setVisible(False)
        self.canvas.mpl_connect("key_press_event", self._key)
        self.candidates = None
        self.order: list[int] = []

    def show(self, candidates) -> None:
        """Draw ``candidates`` (:class:`~napari_active_sam.core.adapt.dpo.Candidates`) and
        wait for the keys."""
        self.candidates, self.order = candidates, []
        self.figure.clear()
        image = candidates.obj.rgb
        region = np.argwhere(candidates.masks[0])
        if len(region):
            (top, left), (bottom, right) = region.min(axis=0), region.max(axis=0) + 1
            margin = max(bottom - top, right - left) // 2 + 4
            top, left = max(top - margin, 0), max(left - margin, 0)
            bottom, right = bottom + margin, right + margin
        else:
            top, left, (bottom, right) = 0, 0, image.shape[:2]
        for number, mask in enumerate(candidates.masks, 1):
            axes = self.figure.add_subplot(1, 4, number)
            axes.imshow(image[top:bottom, left:right])
            if mask[top:bottom, left:right].any():
                axes.contour(mask[top:bottom, left:right], levels=[0.5], colors=[INSIDE_COLOUR],
                             linewidths=1)  # fmt: skip
            axes.set_title(str(number), fontsize=9)
            axes.set_axis_off()
        self.figure.suptitle("best first: press 1-4", fontsize=8)
        self.canvas.setVisible(True)
        self.canvas.draw_idle()
        self.canvas.setFocus()

    def clear(self) -> None:
        """Nothing to rank (a new session)."""
        self.candidates, self.order = None, []
        self.canvas.setVisible(False)

    def _key(self, event) -> None:
        if self.candidates is None or event.key not in {"1", "2", "3", "4"}:
            return
        choice = int(event.key) - 1
        if choice in self.order:
            return
        self.order.append(choice)
        if len(self.order) == 3:
            order = (*self.order, *(i for i in range(4) if i not in self.order))
            candidates, self.candidates = self.candidates, None
            self.canvas.setVisible(False)
            self.controller.ranked(candidates, order)
