"""Volumes: grow an object from prompted slices through its neighbours.

Each new slice is prompted from its neighbour's result: the box around the neighbour's mask
(a box alone: on the sample CT's organs a box followed the object better than a box with a
click at the mask's deepest point, mean Dice per slice 0.95 against 0.87, chiefly on a
small organ where the click chose a larger structure). Growth in a direction stops, saying
why, when the object vanishes, leaks into a larger structure, or SAM's predicted IoU
collapses.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from ..progress import Progress
from ..prompts import PromptSet
from ..sim.clicker import prompts_from_mask
from .session import AnnotationSession


@dataclass(frozen=True)
class PropagationSettings:
    """When propagation stops.

    Attributes
    ----------
    min_iou : float
        Stop when SAM's predicted IoU of the chosen mask falls below this.
    min_area_fraction : float
        Stop when the mask shrinks below this fraction of the neighbour's area (the object
        is vanishing).
    max_area_growth : float
        Stop when the mask grows past this multiple of the neighbour's area (it has leaked
        into a surrounding structure, e.g. from a lesion into its organ).
    """

    min_iou: float = 0.5
    min_area_fraction: float = 0.2
    max_area_growth: float = 2.0


@dataclass(frozen=True, eq=False)
class Propagated:
    """A grown object and where it stopped.

    Attributes
    ----------
    mask : np.ndarray
        Boolean ``(Z, H, W)``.
    stops : tuple of str
        ``"slice z: why"`` for each direction that stopped before the volume's end or the
        next seed's half.
    """

    mask: np.ndarray
    stops: tuple[str, ...] = ()


def propagate(
    session: AnnotationSession,
    seeds: dict[int, np.ndarray],
    settings: PropagationSettings | None = None,
) -> Generator[Progress, None, Propagated]:
    """Grow a 3D mask from seed masks on some slices of a ``(Z, H, W)`` volume.

    Growth runs outwards from every seed, in both directions, until it meets the region of
    the next seed (half-way between them), leaves the volume, or stops (see
    :class:`PropagationSettings`).

    Parameters
    ----------
    session : AnnotationSession
        On a volume (one leading axis).
    seeds : dict of int to np.ndarray
        Slice index → boolean ``(H, W)`` mask the user made there; these slices are kept
        as they are.
    settings : PropagationSettings, optional

    Yields
    ------
    Progress
        After each slice.

    Returns
    -------
    Propagated
        The boolean ``(Z, H, W)`` mask, and where and why growth stopped.
    """
    settings = settings or PropagationSettings()
    (depth,) = session.source.leading_shape
    order = sorted(seeds)
    result = np.zeros((depth, *seeds[order[0]].shape), bool)
    for z, mask in seeds.items():
        result[z] = mask
    runs = []
    for i, start in enumerate(order):
        upper = (start + order[i + 1]) // 2 + 1 if i + 1 < len(order) else depth
        lower = (order[i - 1] + start) // 2 if i > 0 else -1
        runs += [(start, +1, upper), (start, -1, lower)]
    total = depth - len(order)
    done = 0
    stops = []
    for start, direction, limit in runs:
        z = start + direction
        while z != limit and z not in seeds:
            mask, reason = _from_neighbour(session, result[z - direction], z, settings)
            if mask is None:
                stops.append(f"slice {z}: {reason}")
                break
            result[z] = mask
            done += 1
            yield Progress(done, total, f"propagated to slice {z}")
            z += direction
    yield Progress(total, total, "propagation finished")
    return Propagated(result, tuple(stops))


def _from_neighbour(
    session: AnnotationSession, neighbour: np.ndarray, z: int, settings: PropagationSettings
) -> tuple[np.ndarray | None, str]:
    """The mask on slice ``z`` prompted from its neighbour's, or None and why growth stops
    there."""
    if not neighbour.any():
        return None, "the object ended on the slice before"
    prompts = PromptSet(box=prompts_from_mask(neighbour).box)
    session.forget((z,))
    answer = session.answer((z,), prompts)
    mask = answer.mask
    iou = float(answer.prediction.iou[0])
    if iou < settings.min_iou:
        return None, f"SAM's predicted IoU {iou:.2f} < {settings.min_iou:g}"
    area, before = int(mask.sum()), int(neighbour.sum())
    if area < settings.min_area_fraction * before:
        return None, f"the mask shrank to {area} pixels from {before} (it is vanishing)"
    if area > settings.max_area_growth * before:
        return None, f"the mask grew to {area} pixels from {before} (it leaked)"
    return mask, ""
