"""Adaptation in the dock: adapt the model to the committed objects, see what it changed,
switch between the base model and the adapted one; find objects like the committed ones on
the slice on screen and accept those the quality estimate trusts.

The adaptation runs on a worker (cancel with the dock's Cancel); the figure shown is the
mean IoU after one click on committed objects held out of training, before and after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton

from .adaptation import describe

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
        self.find_button = PushButton(text="Find objects like mine on this slice")
        self.accept_above = FloatSpinBox(label="accept above", value=0.8, min=0.0, max=1.0,
                                         step=0.05)  # fmt: skip
        self.accept_button = PushButton(text="Accept candidates", enabled=False)
        self.extend([self.adapt_button, self.decode_with, self.result, self.find_button,
                     self.accept_above, self.accept_button])  # fmt: skip
        self.adapt_button.changed.connect(self.adapt)
        self.decode_with.changed.connect(self._switch)
        self.find_button.changed.connect(self.find_similar)
        self.accept_button.changed.connect(self.accept)
        controller.events.adapted.connect(self._adapted)
        controller.events.adapter_found.connect(self._found)
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
        self.accept_button.enabled = event.count > 0
        self.accept_button.text = f"Accept candidates ({event.count} on offer)"

    def _adapted(self, event) -> None:
        self.result.value = describe(event.adaptation)
        self.decode_with.choices = [BASE, ADAPTED]
        self.decode_with.value = ADAPTED

    def _found(self, event) -> None:
        self.decode_with.choices = [BASE, ADAPTED]
        self.result.value = f"your earlier adaptation is available: {describe(event.adaptation)}"

    def _session_ready(self, event) -> None:
        self.decode_with.choices = [BASE]
        self.decode_with.value = BASE
        self.result.value = "commit two or more objects, then adapt"

    def _switch(self, choice: str) -> None:
        adapted = choice == ADAPTED
        if adapted != self.controller.adaptation.using_adapted:
            self.controller.use_adapted(adapted)
