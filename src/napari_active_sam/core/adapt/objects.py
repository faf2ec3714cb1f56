"""The objects adaptation learns from: each with its embedding and its mask on the grid the
model decodes on (the slice, or the zoom window the annotator would decode it in)."""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segment_anything.utils.transforms import ResizeLongestSide

from ..data.datasets import check_labels, dataset_window, discover_pairs, load_pair
from ..data.files import IMAGE_SUFFIXES, has_suffix, read_image, stem
from ..engine.checkpoints import LoadedModel
from ..engine.embeddings import SliceEncoder, embed_slice
from ..engine.preprocess import IntensityWindow, SliceSource, to_sam_rgb
from ..engine.store import Embedding, EmbeddingStore
from ..engine.zoom import Window, first_side, grid_window, magnify_for, magnify_of, zooms
from ..errors import ActiveSamError, ImageError
from ..progress import Progress
from ..prompts import PromptSet
from .exemplars import Exemplars, Prototypes, search_slice

MIN_OBJECTS = 2
"""Objects adaptation needs at least: one to learn from, one to check it on."""


@dataclass(frozen=True, eq=False)
class LabelledObject:
    """One object on one slice, ready to train on or to evaluate.

    Attributes
    ----------
    embedding : Embedding
        Of the slice, or of the zoom window around the object.
    gt : np.ndarray or None
        Boolean mask on ``embedding``'s image (the window's size for a window); None for an
        object found without a person (:func:`found_objects`).
    rgb : np.ndarray
        uint8 ``(H, W, 3)`` SAM input of that image (for the quality estimators).
    where : tuple
        ``(image, slice index, label)``, for reports.
    base : Embedding, optional
        The base model's embedding, when ``embedding`` comes from an adapted encoder (the
        quality estimators read the base model's).
    prompts : PromptSet, optional
        Where the object was found, in pixels of ``embedding``'s image (objects with a mask
        are prompted at the point deepest inside it).
    """

    embedding: Embedding
    gt: np.ndarray | None
    rgb: np.ndarray
    where: tuple
    base: Embedding | None = None
    prompts: PromptSet | None = None

    @property
    def base_embedding(self) -> Embedding:
        return self.base if self.base is not None else self.embedding

    def input_frame(self, img_size: int) -> np.ndarray:
        """The image as the encoder reads it, before normalisation: uint8
        ``(img_size, img_size, 3)``, resized as SAM resizes (longest side), zero-padded."""
        resized = ResizeLongestSide(img_size).apply_image(self.rgb)
        frame = np.zeros((img_size, img_size, 3), np.uint8)
        frame[: resized.shape[0], : resized.shape[1]] = resized
        return frame

    def target(self, img_size: int, side: int | None = None) -> np.ndarray:
        """The mask in the model's padded input frame: boolean ``(side, side)``, the frame
        shrunk from ``img_size`` to ``side`` if given."""
        if self.gt is None:
            raise ActiveSamError("An object found without a mask cannot be trained on directly.")
        side = side or img_size
        height, width = (round(n * side / img_size) for n in self.embedding.input_size)
        mask = torch.as_tensor(self.gt, dtype=torch.float32)[None, None]
        resized = F.interpolate(mask, (height, width), mode="bilinear", align_corners=False)
        frame = np.zeros((side, side), bool)
        frame[:height, :width] = resized[0, 0].numpy() > 0.5
        if not frame.any():  # smaller than a pixel of the input: keep its centre
            rows, cols = np.nonzero(self.gt)
            scale = height / self.gt.shape[0]
            frame[int(rows.mean() * scale), int(cols.mean() * scale)] = True
        return frame


def sized_for(model: LoadedModel, labels: Iterable[np.ndarray]) -> LoadedModel:
    """``model`` decoding at the first-window magnification that objects like those of
    ``labels`` ask for (:func:`~napari_active_sam.core.engine.zoom.magnify_for`): a shallow
    copy under the same identity. ``labels`` are instance-label images or masks, 2D or a
    stack of slices (an object's size is read on each slice). Objects cut for the copy, and
    the model adapted from them (the adapter keeps the magnification), are decoded in
    windows of that size."""
    extents = [
        max(part.stop - part.start for part in box)
        for image in labels
        for plane in np.asarray(image).reshape((-1, *np.shape(image)[-2:]))
        for box in ndimage.find_objects(plane.astype(np.int64, copy=False))
        if box is not None
    ]
    magnify = magnify_for(extents, model.architecture.img_size)
    return replace(model, extra={**model.extra, "magnify": magnify})


def _box(mask: np.ndarray) -> PromptSet:
    rows, cols = np.nonzero(mask)
    return PromptSet(box=(float(cols.min()), float(rows.min()), float(cols.max()),
                          float(rows.max())))  # fmt: skip


def labelled_objects(
    model: LoadedModel,
    source: SliceSource,
    labels: np.ndarray,
    name: str = "image",
    zoom: bool = True,
    store: EmbeddingStore | None = None,
) -> Generator[Progress, None, list[LabelledObject]]:
    """Every object of an instance-label image (every slice of a volume) as a
    :class:`LabelledObject`.

    On a slice large against the model's input (see
    :func:`~napari_active_sam.core.engine.zoom.zooms`) an object that fits a window is cut
    out with the window the annotator would decode it in, so that the model learns what it
    will be asked; other objects keep the whole slice's embedding.

    Raises
    ------
    ImageError
        Labels whose shape differs from the image's.
    """
    labels = check_labels(labels, source.spatial_shape, "The labels")
    limits = source.limits()
    store = store or EmbeddingStore(model.encoder_id)
    img_size = model.architecture.img_size
    side = first_side(img_size, magnify_of(model))
    planes = [(index, labels[index]) for index in source.slice_indices()]
    planes = [(index, plane) for index, plane in planes if plane.any()]
    found: list[LabelledObject] = []
    for done, (index, plane) in enumerate(planes, 1):
        raw = source.raw_slice(index)
        windows: dict[Window | None, tuple[Embedding, np.ndarray]] = {}
        for label in (int(v) for v in np.unique(plane[plane > 0])):
            mask = plane == label
            window = None
            if zoom and zooms(plane.shape, img_size):
                window = grid_window(_box(mask), plane.shape, side)
            if window not in windows:
                windows[window] = _encoded(model, source, store, index, raw, limits, window)
            embedding, rgb = windows[window]
            gt = mask if window is None else mask[window.slices]
            found.append(LabelledObject(embedding, gt, rgb, (name, index, label)))
        yield Progress(done, len(planes), f"{name}: slice {done}/{len(planes)} ready")
    return found


def _encoded(model, source, store, index, raw, limits, window):
    if window is None:
        return embed_slice(model, source, store, index, limits), to_sam_rgb(raw, limits)
    rgb = to_sam_rgb(raw[window.slices], limits)
    (embedding,) = SliceEncoder(model).encode([rgb], [f"window-{window.top}-{window.left}"])
    return embedding, rgb


def found_objects(
    model: LoadedModel,
    source: SliceSource,
    found: Prototypes,
    name: str = "image",
    count: int = 50,
    exclude: np.ndarray | None = None,
    zoom: bool = True,
) -> Generator[Progress, None, list[LabelledObject]]:
    """Objects like the exemplars on every slice of ``source``, without masks: each with
    the prompt :func:`~.exemplars.search_slice` found and the embedding the annotator
    would decode it with (a zoom window around it on a large slice)."""
    limits = source.limits()
    indices = source.slice_indices()
    objects: list[LabelledObject] = []
    for done, index in enumerate(indices, 1):
        raw = source.raw_slice(index)
        taken = None if exclude is None else np.asarray(exclude[index] if index else exclude)
        prompts = [p for p, _ in search_slice(model, raw, limits, found, count, taken)]
        objects += yield from prompted_objects(model, source, index, prompts, name, zoom)
        yield Progress(done, len(indices), f"{name}: {len(objects)} similar objects found")
    return objects


def prompted_objects(
    model: LoadedModel,
    source: SliceSource,
    index: tuple[int, ...],
    prompts: Sequence[PromptSet],
    name: str = "image",
    zoom: bool = True,
    store: EmbeddingStore | None = None,
) -> Generator[Progress, None, list[LabelledObject]]:
    """Objects nobody outlined, each given by its prompts on slice ``index``, with the
    embedding the annotator would decode them with: a zoom window around them on a large
    slice (one encoder pass per window, shared by the prompts it holds), else the slice's
    own (from ``store`` if it is there)."""
    limits = source.limits()
    raw = source.raw_slice(index)
    img_size = model.architecture.img_size
    side = first_side(img_size, magnify_of(model))
    store = store or EmbeddingStore(model.encoder_id)
    windows: dict[Window | None, tuple[Embedding, np.ndarray]] = {}
    objects = []
    for number, given in enumerate(prompts, 1):
        window = None
        if zoom and zooms(raw.shape[:2], img_size):
            window = grid_window(given, raw.shape[:2], side)
        if window not in windows:
            windows[window] = _encoded(model, source, store, index, raw, limits, window)
        embedding, rgb = windows[window]
        local = given if window is None else given.translated(-window.top, -window.left)
        objects.append(LabelledObject(embedding, None, rgb, (name, index, -number),
                                      prompts=local))  # fmt: skip
        yield Progress(number, len(prompts), f"{name}: object {number}/{len(prompts)} ready")
    return objects


def folder_exemplars(data: Path, window: str | None = None) -> Exemplars:
    """The objects of a labelled folder as exemplars: ``(raw slice, limits, masks)`` per
    slice with objects (unreadable files are left out)."""
    pairs, _ = discover_pairs(data)
    found = []
    for pair in pairs:
        try:
            source, labels = load_pair(pair, dataset_window(data, pair.stem, window))
        except ImageError:
            continue
        found += exemplars_of(source, labels)
    return found


def folder_labels(data: Path) -> list[np.ndarray]:
    """The masks of a labelled folder, without their images (unreadable ones left out):
    what :func:`sized_for` reads."""
    pairs, _ = discover_pairs(data)
    found = []
    for pair in pairs:
        try:
            found.append(np.asarray(read_image(pair.mask).data))
        except ImageError:
            continue
    return found


def exemplars_of(source: SliceSource, labels: np.ndarray) -> Exemplars:
    """The objects of instance ``labels`` on ``source`` as exemplars: ``(raw slice, limits,
    masks)`` per slice that has objects."""
    limits = source.limits()
    found = []
    for index in source.slice_indices():
        plane = labels[index] if index else labels
        masks = [plane == v for v in np.unique(plane[plane > 0])]
        if masks:
            found.append((source.raw_slice(index), limits, masks))
    return found


def folder_images(folder: Path, window: str | None = None) -> list[tuple[str, SliceSource]]:
    """Every readable image of ``folder`` (or of its ``images/``), by name; one that cannot
    be read is left out with a warning that names it and why.

    Raises
    ------
    ActiveSamError
        No readable image.
    """
    folder = Path(folder)
    if (folder / "images").is_dir():
        folder = folder / "images"
    found = []
    for path in sorted(p for p in folder.iterdir() if has_suffix(p, IMAGE_SUFFIXES)):
        try:
            image = read_image(path)
        except ImageError as error:
            warnings.warn(f"{path} left out: {error}", stacklevel=2)
            continue
        window_ = IntensityWindow.from_name(window) if window else IntensityWindow.percentile()
        found.append((stem(path), SliceSource(image.data, window_, rgb=image.rgb)))
    if not found:
        raise ActiveSamError(f"{folder} holds no image that can be read.")
    return found


def folder_objects(
    model: LoadedModel, data: Path, window: str | None = None, zoom: bool = True
) -> Generator[Progress, None, list[LabelledObject]]:
    """Every object of a labelled folder (``images/`` and ``masks/`` of the same names) as a
    :class:`LabelledObject`; files that cannot be read are left out, and said so.

    Raises
    ------
    ActiveSamError
        A folder without both sub-folders, or with no object at all.
    """
    pairs, skipped = discover_pairs(data)
    found: list[LabelledObject] = []
    for done, pair in enumerate(pairs, 1):
        try:
            source, labels = load_pair(pair, dataset_window(data, pair.stem, window))
        except ImageError as error:
            skipped.append({"file": str(pair.mask), "reason": str(error)})
            continue
        found += yield from labelled_objects(model, source, labels, pair.stem, zoom)
        yield Progress(done, len(pairs), f"{pair.stem}: {len(found)} objects so far")
    for entry in skipped if found else ():  # else the error below names them
        warnings.warn(f"{entry['file']} left out: {entry['reason']}", stacklevel=2)
    if not found:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
        raise ActiveSamError(
            f"{data} holds no labelled object to adapt on"
            + (f" ({reasons})" if reasons else "")
            + ": put images in images/ and their instance labels, same names, in masks/."
        )
    return found


def reencoded(model: LoadedModel, objects: Sequence[LabelledObject]) -> list[LabelledObject]:
    """The objects with embeddings from ``model``'s encoder (an adapted one), the base
    model's kept for the quality estimators."""
    encoder = SliceEncoder(model)
    return [
        replace(obj, embedding=encoder.encode([obj.rgb], ["adapted"])[0],
                base=obj.base_embedding)  # fmt: skip
        for obj in objects
    ]


def split_objects(
    objects: Sequence[LabelledObject], held_out: float, rng: np.random.Generator
) -> tuple[list[LabelledObject], list[LabelledObject]]:
    """``(train, held_out)``: a share of the objects (at least one) kept aside to choose
    when to stop; the rest to learn from.

    Raises
    ------
    ActiveSamError
        Fewer than :data:`MIN_OBJECTS` objects.
    """
    if len(objects) < MIN_OBJECTS:
        raise ActiveSamError(
            f"Adapting needs at least {MIN_OBJECTS} labelled objects (one to learn from, one to "
            f"check the result on); found {len(objects)}. Commit or label more objects."
        )
    order = rng.permutation(len(objects))
    count = min(max(1, round(held_out * len(objects))), len(objects) - 1)
    return [objects[i] for i in order[count:]], [objects[i] for i in order[:count]]
