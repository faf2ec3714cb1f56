"""Where simulated sessions get their slices: generated scenes and labelled data sets,
encoded one slice at a time, and the loop that simulates on every object of them."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..data.datasets import dataset_window, discover_pairs, load_pair, object_targets
from ..data.real import real_images
from ..data.scenes import Scene, make_scene, scene_kinds
from ..engine.checkpoints import LoadedModel
from ..engine.embeddings import SliceEncoder, embed_slice
from ..engine.preprocess import to_sam_rgb
from ..engine.store import Embedding, EmbeddingStore
from ..enums import SceneKind
from ..progress import Progress

Example = TypeVar("Example")


def encoded_scenes(
    model: LoadedModel, count: int, rng: np.random.Generator, kinds: list[SceneKind], tag: str
) -> Iterator[tuple[Scene, np.ndarray, Embedding]]:
    """Generated scenes at the model's input size, windowed and encoded one at a time.

    Parameters
    ----------
    model : LoadedModel
    count : int
        Scenes to make; their kinds cycle through ``kinds``.
    rng : np.random.Generator
        Draws the scenes (and is shared with the caller's clicks).
    tag : str
        Prefix of the embeddings' signatures (``f"{tag}-{n}"``, n from 1).

    Yields
    ------
    (Scene, np.ndarray, Embedding)
        The scene, its uint8 ``(S, S, 3)`` SAM input and its embedding.
    """
    encoder = SliceEncoder(model)
    for done in range(1, count + 1):
        scene = make_scene(kinds[(done - 1) % len(kinds)], rng, model.architecture.img_size)
        rgb = to_sam_rgb(scene.image, scene.window.limits(scene.image))
        (embedding,) = encoder.encode([rgb], [f"{tag}-{done}"])
        yield scene, rgb, embedding


@dataclass(frozen=True)
class RealScene:
    """A labelled real image as simulated sessions see a generated scene: its labels, its
    subset as ``kind`` and the objects to sample."""

    labels: np.ndarray
    kind: str

    def sample_objects(self, rng: np.random.Generator, count: int) -> list[tuple[int, np.ndarray]]:
        """Up to ``count`` of the image's objects in random order: ``(label, mask)`` each."""
        labels = rng.permutation(np.unique(self.labels[self.labels > 0]))[:count]
        return [(int(label), self.labels == label) for label in labels]


def encoded_real_images(
    model: LoadedModel, split: str = "validation"
) -> Iterator[tuple[RealScene, np.ndarray, Embedding]]:
    """The real images of ``split`` (:func:`~napari_active_sam.core.data.real.real_images`),
    windowed and encoded one at a time, as :func:`encoded_scenes` gives generated ones."""
    encoder = SliceEncoder(model)
    for image in real_images(split):
        rgb = to_sam_rgb(image.image, image.window.limits(image.image))
        (embedding,) = encoder.encode([rgb], [f"real-{split}-{image.name}"])
        yield RealScene(image.labels, image.subset), rgb, embedding


def on_generated_scenes(
    model: LoadedModel,
    images: int,
    seed: int,
    kind: str,
    objects_per_image: int,
    simulate: Callable[[np.ndarray, Embedding, np.ndarray, np.random.Generator], list[Example]],
    what: str = "simulating clicks",
) -> Generator[Progress, None, list[Example]]:
    """``simulate(sam_input, embedding, object_mask, rng)`` on up to ``objects_per_image``
    objects of each of ``images`` generated scenes; yields progress after each scene and
    returns every example.

    Parameters
    ----------
    kind : str
        A :class:`~napari_active_sam.core.enums.SceneKind`, or ``"all"`` to cycle through
        them.
    seed : int
        Seeds the scenes, the objects chosen and (through ``rng``) the simulation.
    """
    rng = np.random.default_rng(seed)
    scenes = encoded_scenes(model, images, rng, scene_kinds(kind), f"generated-{seed}")
    examples: list[Example] = []
    for done, (scene, rgb, embedding) in enumerate(scenes, 1):
        for _, gt in scene.sample_objects(rng, objects_per_image):
            examples += simulate(rgb, embedding, gt, rng)
        yield Progress(done, images, f"{what} on generated image {done}/{images}")
    return examples


def labelled_objects(
    data: Path, model: LoadedModel, window: str | None = None
) -> Iterator[tuple[np.ndarray, Embedding, np.ndarray]]:
    """Every object of a labelled data set, on its slice of largest area, encoded.

    Yields
    ------
    (np.ndarray, Embedding, np.ndarray)
        The slice's uint8 ``(H, W, 3)`` SAM input, its embedding and the object's boolean
        ``(H, W)`` mask.
    """
    pairs, _ = discover_pairs(data)
    for pair in pairs:
        source, labels = load_pair(pair, dataset_window(data, pair.stem, window))
        store, limits = EmbeddingStore(model.encoder_id), source.limits()
        for target in object_targets(labels):
            (index,) = target.indices
            embedding = embed_slice(model, source, store, index, limits)
            yield source.sam_slice(index, limits), embedding, labels[index] == target.label
