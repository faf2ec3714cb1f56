"""Layers the widget manages, and the one place napari's (row, col) becomes SAM's (x, y).

Every layer is found by name, so a user may hide, restyle or remove one: the functions
here create what is missing, keep what the user made, and draw into the layers that exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from ..core.errors import ActiveSamError
from ..core.prompts import Click, PromptSet, Suggestion

if TYPE_CHECKING:
    import napari

PROMPTS = "SAM prompts"
PREVIEW = "SAM preview"
OUTPUT = "SAM labels"
UNCERTAINTY = "SAM uncertainty"
SUGGESTIONS = "SAM suggestions"
CANDIDATES = "SAM candidates"
MANAGED = (PROMPTS, PREVIEW, OUTPUT, UNCERTAINTY, SUGGESTIONS)

INSIDE_COLOUR = "#56b4e9"
"""Sky blue: inside clicks, and suggestions the model believes inside (Okabe and Ito's
palette: blue and orange stay apart for every common colour-vision deficiency)."""
OUTSIDE_COLOUR = "#e69f00"
"""Orange: outside clicks, and suggestions the model believes outside."""
LEFT_OUT_COLOUR = "#cc79a7"
"""Reddish purple (Okabe and Ito): the ring around a click the mask shown leaves out."""
CLICK_BORDER = 0.05
"""A click marker's white border, as a share of its size (napari's default)."""
LEFT_OUT_BORDER = 0.3
"""The ring around a click the mask leaves out, as a share of the marker's size."""
CLICK_PIXELS = 12
"""Screen pixels of a click marker, whatever the zoom."""
RING_PIXELS = 22
"""Screen pixels of a suggestion ring, whatever the zoom."""

MAP_LIMIT = float(np.log(2))
"""The uncertainty map's fixed scale, 0 to ln 2 nats: the most a binary label can hold
(BALD, EIG and entropy alike), so the map glows only where the model is unsure."""
PREVIEW_CONTOUR = 2
"""The preview mask is drawn as its outline, this many pixels wide, over the map."""


# ------------------------------------------------------------------------ coordinates
def prompts_on_slice(points: napari.layers.Points, index: tuple[int, ...]) -> PromptSet:
    """The clicks of ``points`` that lie on slice ``index``, as SAM prompts.

    Points carry napari's data coordinates ``(..., row, col)`` and a ``positive`` feature;
    points on other slices (or moved between slices) are left out.
    """
    if len(points.data) == 0:
        return PromptSet()
    data = np.asarray(points.data)
    positive = np.asarray(points.features.get("positive", np.ones(len(data), bool)), bool)
    here = _on_slice(data, index)
    return PromptSet(
        clicks=tuple(
            Click(x=float(col), y=float(row), positive=bool(p))
            for (row, col), p in zip(data[here, -2:], positive[here], strict=True)
        )
    )


def prompted_slices(points: napari.layers.Points) -> dict[int, PromptSet]:
    """The prompts of every slice of a volume ``(z, row, col)`` that has clicks, by ``z``."""
    slices = sorted({int(round(p[0])) for p in np.asarray(points.data)})
    prompted = {z: prompts_on_slice(points, (z,)) for z in slices}
    return {z: p for z, p in prompted.items() if p.clicks}


def point_for(index: tuple[int, ...], row: float, col: float) -> np.ndarray:
    """napari data coordinates of a click at (row, col) on slice ``index``."""
    return np.array([*index, row, col], float)


def suggestion_points(index: tuple[int, ...], suggestions: tuple[Suggestion, ...]) -> np.ndarray:
    """napari data coordinates ``(N, ndim)`` of suggestions on slice ``index``."""
    if not suggestions:
        return np.empty((0, len(index) + 2))
    return np.array([point_for(index, s.y, s.x) for s in suggestions])


def slice_at_cursor(
    viewer: napari.Viewer, image: napari.layers.Image | None, leading_shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The data index of ``image``'s slice on screen (``()`` for a 2D image).

    ``leading_shape`` is the image's shape before its two (row, col) axes, channels left
    out.
    """
    leading = len(leading_shape)
    if not leading or image is None:
        return ()
    # World to the image's data coordinates: right even when other layers differ in scale.
    point = image.world_to_data(viewer.dims.point)
    return tuple(
        int(np.clip(round(float(v)), 0, n - 1))
        for v, n in zip(point[:leading], leading_shape, strict=True)
    )


def show_slice(viewer: napari.Viewer, image: napari.layers.Image, index: tuple[int, ...]):
    """Move the viewer to the slice at data index ``index`` of ``image``."""
    world = image.data_to_world([*index, 0, 0])
    step = list(viewer.dims.point)
    offset = len(step) - image.ndim  # napari aligns layers on their trailing axes
    for axis in range(len(index)):
        step[offset + axis] = world[axis]
    viewer.dims.point = step


def _on_slice(data: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """Which rows of point ``data`` ``(N, ndim)`` lie on slice ``index``."""
    if not index:
        return np.ones(len(data), bool)
    leading = np.round(data[:, :-2]).astype(int)
    return np.all(leading == np.array(index, int), axis=1)


# --------------------------------------------------------------------------- creation
def ensure_layers(viewer: napari.Viewer, image: napari.layers.Image,
                  prompts_changed: Callable, keys: dict[str, Callable],
                  clear: bool = True) -> None:  # fmt: skip
    """Create the output, preview, uncertainty, suggestions and prompts layers on
    ``image``'s grid, keeping what the user made; with ``clear``, empty the preview and
    the uncertainty map (a new session draws them afresh).

    ``prompts_changed`` hears every edit of the prompts layer (connected once, so a
    restarted session keeps the user's clicks); each key of ``keys`` runs its action (no
    arguments) in every managed layer.

    Raises
    ------
    ActiveSamError
        If the output labels layer exists with another shape (it is left untouched).
    """
    shape = image.data.shape[:-1] if image.rgb else image.data.shape
    ndim = len(shape)
    placement = {"scale": image.scale[:ndim], "translate": image.translate[:ndim]}
    layers = viewer.layers
    if OUTPUT in layers and layers[OUTPUT].data.shape != shape:
        raise ActiveSamError(
            f"The labels layer '{OUTPUT}' has shape {layers[OUTPUT].data.shape} but the "
            f"image has {shape}: rename or remove that layer to start a new one."
        )
    if OUTPUT not in layers:
        # The image's metadata (a NIfTI affine) lets the labels be saved onto its grid.
        viewer.add_labels(np.zeros(shape, np.int32), name=OUTPUT,
                          metadata=dict(image.metadata), **placement)  # fmt: skip
    if PREVIEW in layers and layers[PREVIEW].data.shape != shape:
        layers.remove(PREVIEW)
    if PREVIEW not in layers:
        viewer.add_labels(np.zeros(shape, np.uint8), name=PREVIEW, opacity=1.0,
                          **placement).contour = PREVIEW_CONTOUR  # fmt: skip
    if clear:
        layers[PREVIEW].data[...] = 0
        layers[PREVIEW].refresh()
    if UNCERTAINTY in layers and layers[UNCERTAINTY].data.shape != shape:
        layers.remove(UNCERTAINTY)
    if UNCERTAINTY not in layers:
        uncertainty = viewer.add_image(
            np.zeros(shape, np.float32), name=UNCERTAINTY, colormap="magma", opacity=0.6,
            blending="additive", contrast_limits=(0, MAP_LIMIT), **placement,
        )  # fmt: skip
        uncertainty.colorbar.visible = True
    if clear:
        layers[UNCERTAINTY].data[...] = 0
    if layers.index(UNCERTAINTY) > layers.index(PREVIEW):  # the mask outline stays on top
        layers.move(layers.index(UNCERTAINTY), layers.index(PREVIEW))
    if SUGGESTIONS in layers and layers[SUGGESTIONS].ndim != ndim:
        layers.remove(SUGGESTIONS)
    if SUGGESTIONS not in layers:
        viewer.add_points(
            np.empty((0, ndim)), name=SUGGESTIONS, ndim=ndim, symbol="disc",
            size=_screen_sized(shape), canvas_size_limits=(RING_PIXELS, RING_PIXELS),
            features={"rank": np.array([], int), "belief": np.array([], float)},
            text={"string": "{rank}", "color": "white", "anchor": "upper_left", "size": 12},
            border_width=0, **placement,
        )  # fmt: skip
    layers[SUGGESTIONS].editable = False
    if PROMPTS in layers and layers[PROMPTS].ndim != ndim:
        layers.remove(PROMPTS)
    if PROMPTS not in layers:
        points = viewer.add_points(
            np.empty((0, ndim)), name=PROMPTS, ndim=ndim, size=_screen_sized(shape),
            canvas_size_limits=(CLICK_PIXELS, CLICK_PIXELS),
            features={"positive": np.array([], bool)}, border_color="white", **placement,
        )  # fmt: skip
        points.feature_defaults["positive"] = True
        points.mode = "add"
    points = layers[PROMPTS]
    if polarity_from_button not in points.mouse_drag_callbacks:
        # First in the list, so napari's own "add" sees the polarity of this press.
        points.mouse_drag_callbacks.insert(0, polarity_from_button)
    points.events.data.disconnect(prompts_changed)
    points.events.data.connect(prompts_changed)
    for name in MANAGED:
        for key, action in keys.items():
            layers[name].bind_key(key, _on_key(action, prompts_changed), overwrite=True)
    viewer.layers.selection.active = points


def release_layers(viewer: napari.viewer.Viewer, prompts_changed, keys) -> None:
    """Undo what :func:`ensure_layers` bound to the layers still in ``viewer`` for the
    dock whose ``prompts_changed`` it was: its ``keys`` (names; a key bound since by
    another dock stays) and ``prompts_changed``. The layers, their data and the shared
    polarity callback stay."""
    from napari.utils.key_bindings import coerce_keybinding

    layers = viewer.layers
    for name in MANAGED:
        if name in layers:
            keymap = layers[name].keymap
            for key in keys:
                bound = keymap.get(coerce_keybinding(key))
                if getattr(bound, "owner", None) == prompts_changed:
                    layers[name].bind_key(key, None)
    if PROMPTS in layers:
        layers[PROMPTS].events.data.disconnect(prompts_changed)


def polarity_from_button(layer: napari.layers.Points, event) -> None:
    """Each press in "add" mode sets the polarity of the point napari's "add" makes: left
    positive, right negative.

    napari adds the point when the button is released, after this press's callbacks have
    ended, so the polarity set here holds until the next press.
    """
    if layer.mode == "add" and event.button in (1, 2):
        layer.feature_defaults["positive"] = event.button == 1


# ----------------------------------------------------------------------------- editing
def _on_key(action, owner):
    """``action`` as a key binding (napari passes the layer), marked with the dock that
    bound it (its ``prompts_changed``) for :func:`release_layers`."""

    def pressed(_layer) -> None:
        action()

    pressed.owner = owner
    return pressed


def add_point(points: napari.layers.Points, index: tuple[int, ...], row: float, col: float,
              positive: bool = True) -> None:  # fmt: skip
    """Add a click at (row, col) on slice ``index``, as napari's "add" mode would."""
    points.feature_defaults["positive"] = positive
    points.add(point_for(index, row, col))
    points.feature_defaults["positive"] = True


def toggle_last_point(points: napari.layers.Points, index: tuple[int, ...]) -> bool:
    """Flip the polarity of the last point on slice ``index`` (one the user sees); False
    when that slice has none."""
    if not len(points.data):
        return False
    here = np.flatnonzero(_on_slice(np.asarray(points.data), index))
    if not len(here):
        return False
    positive = np.asarray(points.features["positive"], bool).copy()
    positive[here[-1]] = not positive[here[-1]]
    points.features = {"positive": positive}
    return True


def remove_points_at(points: napari.layers.Points, coordinates: np.ndarray) -> None:
    """Delete the points at ``coordinates`` ``(N, ndim)`` (those still there, through
    napari, so the removal is an event); other points stay."""
    data = np.asarray(points.data)
    if not len(data) or not len(coordinates):
        return
    gone = (data[:, None, :] == np.asarray(coordinates)[None]).all(axis=-1).any(axis=1)
    points.selected_data = set(np.flatnonzero(gone).tolist())
    points.remove_selected()


def remove_points_on_slice(points: napari.layers.Points, index: tuple[int, ...]) -> None:
    """Delete the points of slice ``index`` (through napari, so the removal is an event)."""
    if len(points.data):
        here = _on_slice(np.asarray(points.data), index)
        points.selected_data = set(np.flatnonzero(here).tolist())
        points.remove_selected()


# ---------------------------------------------------------------------------- drawing
def colour_points(points: napari.layers.Points) -> None:
    """:data:`INSIDE_COLOUR` for positive clicks, :data:`OUTSIDE_COLOUR` for negative ones."""
    if len(points.data):
        positive = np.asarray(points.features["positive"], bool)
        points.face_color = [INSIDE_COLOUR if p else OUTSIDE_COLOUR for p in positive]


def ring_left_out(viewer: napari.Viewer, index: tuple[int, ...],
                  clicks: tuple[Click, ...]) -> None:  # fmt: skip
    """Ring the clicks of slice ``index`` that the mask shown leaves out (``clicks``, from
    :func:`~napari_active_sam.core.prompts.left_out`) in :data:`LEFT_OUT_COLOUR`; every
    other click gets its thin white border back."""
    if PROMPTS not in viewer.layers or not len(viewer.layers[PROMPTS].data):
        return
    points = viewer.layers[PROMPTS]
    data = np.asarray(points.data)
    positive = np.asarray(points.features["positive"], bool)
    wanted = {(c.y, c.x, c.positive) for c in clicks}
    here = _on_slice(data, index)
    ringed = [
        bool(on) and (float(row), float(col), bool(p)) in wanted
        for on, (row, col), p in zip(here, data[:, -2:], positive, strict=True)
    ]
    points.border_color = [LEFT_OUT_COLOUR if r else "white" for r in ringed]
    points.border_width = np.where(ringed, LEFT_OUT_BORDER, CLICK_BORDER)


def show_preview(viewer: napari.Viewer, index: tuple[int, ...], mask: np.ndarray | None):
    """Draw the boolean ``(H, W)`` ``mask`` (None: nothing) on slice ``index``."""
    if PREVIEW not in viewer.layers:
        return
    preview = viewer.layers[PREVIEW]
    preview.data[index] = 0 if mask is None else mask.astype(np.uint8)
    preview.refresh()


def previewed(viewer: napari.Viewer, index: tuple[int, ...]) -> np.ndarray:
    """The boolean ``(H, W)`` mask the preview layer shows on slice ``index``."""
    return np.asarray(viewer.layers[PREVIEW].data[index]) > 0


def show_uncertainty(viewer: napari.Viewer, index: tuple[int, ...], scores: np.ndarray | None):
    """Draw an acquisition map ``(H, W)`` in nats (None: nothing) on slice ``index``, on
    the fixed scale 0 to :data:`MAP_LIMIT`."""
    if UNCERTAINTY not in viewer.layers:
        return
    image = viewer.layers[UNCERTAINTY]
    image.data[index] = 0 if scores is None else scores
    image.refresh()


def show_suggestions(
    viewer: napari.Viewer, index: tuple[int, ...], offered: tuple[Suggestion, ...] | None
) -> None:
    """Mark the ``offered`` suggestions on slice ``index`` with their rank, coloured by
    belief (None: clear the marks)."""
    if SUGGESTIONS not in viewer.layers:
        return
    layer = viewer.layers[SUGGESTIONS]
    if offered is None:
        layer.data = np.empty((0, layer.ndim))
        return
    layer.data = suggestion_points(index, offered)
    layer.features = {
        "rank": np.array([s.rank for s in offered], int),
        "belief": np.array([s.belief for s in offered], float),
    }
    if offered:  # a coloured outline: the image under a suggestion stays visible
        layer.border_color = belief_colours(layer.features["belief"].to_numpy())
        layer.face_color = "transparent"
        layer.border_width = 0.15
    layer.refresh()


def show_predicted_dice(viewer: napari.Viewer, objects: dict[int, float]) -> None:
    """Predicted Dice per object as the output layer's features (napari shows them when
    the pointer is over an object)."""
    set_object_features(viewer, {"predicted_dice": objects})


def set_object_features(viewer: napari.Viewer, columns: dict[str, dict[int, float]]) -> None:
    """Put per-object ``columns`` (name → label → value) into the output layer's features,
    replacing columns of those names and keeping the others, the user's text columns too
    (NaN, or None in a text column, where an object has no value)."""
    if OUTPUT not in viewer.layers:
        return
    from pandas.api.types import is_numeric_dtype

    layer = viewer.layers[OUTPUT]
    current = layer.features
    table: dict[str, dict[int, Any]] = {}
    text: set[str] = set()
    if "index" in current:
        labels = [int(v) for v in current["index"]]
        for name in current.columns:
            if name == "index":
                continue
            values = dict(zip(labels, current[name], strict=True))
            if is_numeric_dtype(current[name]):
                table[name] = {k: float(v) for k, v in values.items() if k and np.isfinite(v)}
            else:
                table[name] = {k: v for k, v in values.items() if k and not _missing(v)}
                text.add(name)
    table.update(columns)
    text -= set(columns)
    keep = sorted({label for values in table.values() for label in values})
    layer.features = {
        "index": np.array([0, *keep], int),
        **{name: np.array([None, *(values.get(k) for k in keep)], object) if name in text
           else np.array([np.nan, *(values.get(k, np.nan) for k in keep)])
           for name, values in table.items()},
    }  # fmt: skip


def full_resolution(layer: napari.layers.Layer):
    """A layer's data at full resolution: the first level of a multiscale layer (whose
    ``data`` read as one array would be its coarsest)."""
    return layer.data[0] if layer.multiscale else layer.data


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def show_candidates(viewer: napari.Viewer, index: tuple[int, ...],
                    masks: list[np.ndarray], dice: list[float]) -> None:  # fmt: skip
    """Candidate objects on slice ``index`` as a Labels layer over the output (label
    ``i + 1`` for candidate ``i``, its predicted Dice in the features; the first, the one
    the keys answer, in :data:`INSIDE_COLOUR`, the others grey); none removes it."""
    if not masks or OUTPUT not in viewer.layers:
        if CANDIDATES in viewer.layers:
            viewer.layers.remove(CANDIDATES)
        return
    output = viewer.layers[OUTPUT]
    plane = np.zeros(output.data.shape[-2:], np.int32)
    for number, mask in enumerate(masks, 1):
        plane[mask & (plane == 0)] = number
    features = {"index": np.arange(len(masks) + 1), "predicted_dice": [np.nan, *dice]}
    layer = None
    if CANDIDATES in viewer.layers:
        layer = viewer.layers[CANDIDATES]
    if layer is not None and layer.data.shape == output.data.shape:
        drawn = layer.metadata.get("slice", index)  # one plane is drawn at a time
        layer.data[drawn] = 0
        layer.data[index] = plane
        layer.metadata["slice"] = index
        layer.features = features
        layer.refresh()
    else:
        if layer is not None:
            viewer.layers.remove(layer)
        data = np.zeros(output.data.shape, np.int32)
        data[index] = plane
        active = viewer.layers.selection.active  # the keys stay with the layer they were in
        layer = viewer.add_labels(data, name=CANDIDATES, opacity=0.5, scale=output.scale,
                                  translate=output.translate, features=features,
                                  metadata={"slice": index})  # fmt: skip
        viewer.layers.selection.active = active
    layer.colormap = DirectLabelColormap(
        color_dict={None: "#9a9a9a", 0: "transparent", 1: INSIDE_COLOUR}
    )
    layer.contour = 1


def belief_colours(beliefs: np.ndarray) -> list[str]:
    """One colour per suggestion: :data:`INSIDE_COLOUR` where the model believes "inside"
    (belief at least 0.5), :data:`OUTSIDE_COLOUR` elsewhere."""
    return [INSIDE_COLOUR if b >= 0.5 else OUTSIDE_COLOUR for b in np.asarray(beliefs, float)]


def _screen_sized(shape: tuple[int, ...]) -> float:
    """A marker's size in data pixels: a tenth of the image's larger side, so that the
    canvas limits (screen pixels) decide how big it looks at any zoom."""
    return max(shape[-2:]) / 10
