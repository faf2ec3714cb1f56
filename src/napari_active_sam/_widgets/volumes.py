"""Propagation through a volume and corrections of a propagated object, for the dock.

:class:`VolumeActions` is part of the annotation controller
(:class:`~napari_active_sam._widgets.controller.AnnotationController`): it reads and sets
the controller's state (the session, the clicks, the object being corrected); the growth
itself runs on a worker of :mod:`.objects`.
"""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_info

from ..core.prompts import PromptSet, correction
from ..core.sim.clicker import prompts_from_mask
from . import layers


class VolumeActions:
    """*Propagate* and *Correct the least sure slice* of the annotation controller."""

    def propagate(self) -> None:
        """Grow the prompted object through the volume on a worker; commit it as one object.

        Every slice with prompts seeds the growth; its clicks are cleared once the object
        is committed.
        """
        if self.session is None:
            show_info("Choose an image and wait until the model is ready, then click.")
            return
        if len(self.session.source.leading_shape) != 1:
            show_info("Propagation needs a volume (z, y, x).")
            return
        if self.session.source.leading_shape[0] < 2:
            show_info("This volume has one slice: there is nothing to propagate to. Commit "
                      "the object with C instead.")  # fmt: skip
            return
        if layers.OUTPUT not in self.viewer.layers:  # the user removed it: a new one
            self._ensure_layers(self.image)
        prompted = layers.prompted_slices(self._points)
        if not prompted:
            show_info("Click inside the object on at least one slice first.")
            return
        self.cancel_encoding()
        # Each slice seeds with the mask the user saw there, where it is up to date (made
        # from its prompts as they are asked now): the preview was built click by click,
        # and asked afresh SAM may answer otherwise. The other slices are asked as they
        # would be previewed: as a correction of the object being corrected, starting from
        # its mask where it is there.
        shown, priors, asked = {}, {}, {}
        previews = layers.PREVIEW in self.viewer.layers
        for z, prompts in prompted.items():
            now = self._asked((z,), prompts)
            asked[z] = now.asked
            if previews and now.same(self._previewed.get((z,))):
                shown[z] = layers.previewed(self.viewer, (z,))
            elif now.prior is not None:
                priors[z] = now.prior
        # The correction lasts until the regrown object is committed: pressed again (or
        # cancelled) before then, Propagate still regrows that object.
        self.encoder = self.objects.propagate(self.session, asked, shown, self.correcting,
                                              priors, done=self._regrown,
                                              max_uncertainty=self.max_uncertainty)  # fmt: skip

    def _regrown(self, label: int) -> None:
        """Object ``label`` was committed by propagation: a correction of it is over."""
        if self.correcting == label:
            self.correcting = None

    def _correction(self, index: tuple[int, ...],
                    prompts: PromptSet) -> tuple[PromptSet, np.ndarray | None]:  # fmt: skip
        """What clicks ``prompts`` on slice ``index`` ask, and the mask they correct, while
        an object is corrected (:func:`~napari_active_sam.core.prompts.correction`: its
        mask there refined, or a box of its size on the nearest slice it is on, as the 3D
        benchmark's corrections ask); otherwise the prompts themselves and None."""
        if self.correcting is None or len(index) != 1 or layers.OUTPUT not in self.viewer.layers:
            return prompts, None
        labels = self.viewer.layers[layers.OUTPUT].data  # read outwards from the slice
        return correction(prompts, labels, index[0], self.correcting)

    def correct_slice(self, label: int, z: int) -> None:
        """Start correcting propagated object ``label`` on slice ``z``: go there, click at
        the object's deepest point, so that its mask, uncertainty map and suggested clicks
        are drawn; answer them (A, D, S) or click, then *Propagate* grows the object again
        from its seeds and this slice, under the same label. Until then the clicks there
        refine the mask propagation left on the slice, as the 3D benchmark's corrections
        refine the mask shown: they are asked with the box around it (stretched over
        positive clicks outside it) and the mask itself (SAM's mask prompt). Clicks on
        other slices seed the regrowth too: where the object is they refine its mask there
        the same way, where it is not yet they are asked with a box of its size on the
        nearest slice it is on (:meth:`_correction`)."""
        if self.session is None or layers.OUTPUT not in self.viewer.layers:
            return
        waiting = sorted(layers.prompted_slices(self._points))
        if waiting and self.correcting != label:  # not this object's: they would join it
            where = ", ".join(str(k) for k in waiting)
            return show_info(f"Clicks on slice(s) {where} are not of object {label}: commit "
                             "them (C or Propagate) or clear them (X) first.")  # fmt: skip
        self.go_to_slice((z,))
        mask = np.asarray(self.viewer.layers[layers.OUTPUT].data[z]) == label
        if not mask.any():
            return show_info(f"Object {label} is not on slice {z}.")
        self.correcting = label
        layers.remove_points_on_slice(self._points, (z,))
        (click,) = prompts_from_mask(mask).clicks
        self.add_click(click.y, click.x, positive=True)
        self._say(f"correcting object {label} on slice {z}: answer the suggestions or click, "
                  "then Propagate")  # fmt: skip
