"""Generated 2D scenes with instance ground truth, in the users' modalities.

Five kinds of generated scene, each a few hundred pixels square, and crops of real images:

- ``ct``: a body outline on air in Hounsfield units, organ-like regions, a spine, vessels and
  lesions inside organs; Gaussian noise and smooth inhomogeneity. Shown with the soft-tissue
  window.
- ``ultrasound``: hypo- and hyperechoic regions in multiplicative speckle, log-compressed.
- ``nuclei``: fluorescence-like nuclei, isolated and in touching clusters, blurred, with
  Poisson noise.
- ``mixed``: ellipses, irregular blobs, thin curved structures and objects inside objects on
  textured backgrounds with varied contrast.
- ``random``: domain randomisation after SynthSeg (Billot et al. 2023): random label maps
  (Voronoi tissue, organs, blobs, tubes, crowds of small objects, objects inside objects,
  elastically deformed) with a random appearance per region, bias field, blur, resolution,
  noise model, gamma and clutter that is not an object. Teaches a model what every modality
  shares (an object is a region bounded by a change in statistics) rather than one
  generator's look.
- ``real-crops``: crops of real training images that ship inside installed packages, none
  of the real evaluation set's (:mod:`.real_training`).

Every scene comes with instance labels (0 = background) and, for objects drawn inside another
object, the parent's label: a click inside a child is ambiguous (child or parent), which is
what SAM's multimask heads are for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from ..engine.preprocess import IntensityWindow
from ..enums import SceneKind
from ..errors import ActiveSamError
from ..keeping import check_new_folder
from .randomised import random_scene
from .real_training import real_training_scene
from .shapes import Painter, Scene, blob, ellipse, random_center, smooth_field, tube

# ----------------------------------------------------------------------------- scenes


def _ct(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    air = np.full(shape, -1000.0, np.float32)
    painter = Painter(shape, air)
    c = np.array(shape) / 2 + rng.normal(0, size * 0.03, 2)
    body = ellipse(shape, c, (size * rng.uniform(0.3, 0.4), size * rng.uniform(0.4, 0.47)), 0)
    fat = -100 + 15 * smooth_field(shape, rng, 8)
    painter.image[body] = fat[body]
    muscle_ring = body & ~ellipse(shape, c, (size * 0.27, size * 0.36), 0)
    painter.image[muscle_ring] = 45
    # Organs: a liver-like blob, kidneys, spleen, a spine, vessels.
    organs = [
        (blob(shape, c + [-0.02 * size, -0.14 * size], 0.14 * size, rng, 0.35), 60),
        (ellipse(shape, c + [0.1 * size, -0.17 * size], (0.06 * size, 0.04 * size), 0.3), 35),
        (ellipse(shape, c + [0.1 * size, 0.17 * size], (0.06 * size, 0.04 * size), -0.3), 35),
        (blob(shape, c + [-0.05 * size, 0.18 * size], 0.07 * size, rng, 0.3), 50),
    ]
    organ_labels = []
    for mask, hu in organs:
        if rng.random() < 0.85:
            jitter = hu + rng.normal(0, 15) + 8 * smooth_field(shape, rng, 4)
            organ_labels.append(painter.add(mask & body, jitter))
    spine = ellipse(shape, c + [0.2 * size, 0], (0.05 * size, 0.05 * size), 0)
    painter.add(spine & body, 700 + 80 * smooth_field(shape, rng, 2))
    aorta = ellipse(shape, c + [0.1 * size, 0.02 * size], (0.025 * size, 0.025 * size), 0)
    painter.add(aorta & body, 180.0)
    if rng.random() < 0.6:
        vessel = tube(shape, rng, width=rng.uniform(2.5, 5), length_fraction=0.4)
        painter.add(vessel & body, 170.0)
    # Lesions inside organs: the ambiguous objects-inside-objects.
    for parent in organ_labels:
        if parent and rng.random() < 0.5:
            ys, xs = np.nonzero(painter.labels == parent)
            i = rng.integers(len(ys))
            radius = rng.uniform(0.02, 0.045) * size
            lesion = blob(shape, (ys[i], xs[i]), radius, rng, 0.2)
            painter.add(lesion, rng.choice([10.0, 110.0]), parent=parent)
    image = painter.image + 3 * smooth_field(shape, rng, 20) + rng.normal(0, 12, shape)
    hounsfield = np.clip(image, -1024, 3071).astype(np.int16)
    return painter.scene(hounsfield, SceneKind.CT, IntensityWindow.ct("soft_tissue"))


def _ultrasound(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    reflectivity = 0.5 + 0.15 * smooth_field(shape, rng, 10)
    painter = Painter(shape, reflectivity)
    for _ in range(rng.integers(1, 4)):
        center = random_center(rng, shape, size * 0.2)
        radius = rng.uniform(0.07, 0.18) * size
        mask = blob(shape, center, radius, rng, rng.uniform(0.05, 0.35))
        level = rng.choice([rng.uniform(0.03, 0.2), rng.uniform(0.9, 1.4)])
        label = painter.add(mask, float(level))
        if label and rng.random() < 0.3:
            inner = blob(shape, center, radius * rng.uniform(0.3, 0.5), rng, 0.1)
            painter.add(inner, float(rng.uniform(1.2, 1.6)), parent=label)
    labels, _ = painter.finish()
    edges = ndimage.gaussian_gradient_magnitude(labels.astype(np.float32), 1.0) > 0
    intensity = painter.image + 0.4 * edges
    speckle = rng.rayleigh(1.0, shape).astype(np.float32)
    speckle = ndimage.gaussian_filter(speckle, (1.5, 0.6))  # elongated speckle cells
    envelope = np.clip(intensity, 0.01, None) * speckle
    log_image = 20 * np.log10(envelope + 1e-3)
    image = np.clip((log_image + 40) / 50 * 255, 0, 255)
    depth = np.linspace(1.0, 0.6, size, dtype=np.float32)[:, None]  # attenuation with depth
    return painter.scene((image * depth).astype(np.uint8), SceneKind.ULTRASOUND)


def _nuclei(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    painter = Painter(shape, np.zeros(shape, np.float32))
    base = rng.uniform(0.025, 0.05) * size  # typical nucleus semi-axis
    clusters = rng.integers(2, 5)
    for _ in range(clusters):
        center = random_center(rng, shape, size * 0.15)
        for _ in range(rng.integers(1, 6)):
            offset = rng.normal(0, base * 1.6, 2)
            axes = base * rng.uniform(0.8, 1.3, 2)
            mask = ellipse(shape, center + offset, axes, rng.uniform(0, np.pi))
            mask &= blob(shape, center + offset, axes.max() * 1.05, rng, 0.12)
            brightness = rng.uniform(0.4, 1.0)
            texture = brightness * (1 + 0.15 * smooth_field(shape, rng, 1.5))
            painter.add(mask, texture)
    signal = ndimage.gaussian_filter(painter.image, rng.uniform(0.7, 1.5))
    photons = rng.uniform(40, 400)
    counts = rng.poisson(np.clip(signal + 0.03, 0, None) * photons).astype(np.float32)
    image = counts + rng.normal(100, 2, shape)  # camera offset and read noise
    return painter.scene(np.clip(image, 0, 65535).astype(np.uint16), SceneKind.NUCLEI)


def _mixed(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    contrast = rng.uniform(0.15, 0.6)
    background = 0.5 + 0.15 * smooth_field(shape, rng, rng.uniform(3, 20))
    painter = Painter(shape, background)
    for _ in range(rng.integers(2, 6)):
        choice = rng.random()
        center = random_center(rng, shape, size * 0.12)
        level = 0.5 + rng.choice([-1, 1]) * contrast * rng.uniform(0.6, 1.0)
        if choice < 0.35:
            axes = rng.uniform(0.04, 0.2, 2) * size
            mask = ellipse(shape, center, axes, rng.uniform(0, np.pi))
        elif choice < 0.7:
            mask = blob(shape, center, rng.uniform(0.05, 0.18) * size, rng, rng.uniform(0.2, 0.5))
        else:
            mask = tube(shape, rng, width=rng.uniform(3, 8), length_fraction=rng.uniform(0.3, 0.7))
        texture = level + 0.05 * smooth_field(shape, rng, 2)
        label = painter.add(mask, texture)
        if label and choice < 0.7 and rng.random() < 0.35:
            inner = blob(shape, center, rng.uniform(0.3, 0.5) * mask.sum() ** 0.5 / 1.8, rng, 0.2)
            painter.add(inner, float(np.clip(level + rng.choice([-1, 1]) * 0.25, 0, 1)), label)
    noise = rng.uniform(0.02, 0.08)
    image = painter.image + noise * rng.standard_normal(shape)
    return painter.scene(np.clip(image * 255, 0, 255).astype(np.uint8), SceneKind.MIXED)


_GENERATORS = {
    SceneKind.CT: _ct,
    SceneKind.ULTRASOUND: _ultrasound,
    SceneKind.NUCLEI: _nuclei,
    SceneKind.MIXED: _mixed,
    SceneKind.RANDOM: random_scene,
    SceneKind.REAL_CROPS: real_training_scene,
}


MODALITY_KINDS = (SceneKind.CT, SceneKind.ULTRASOUND, SceneKind.NUCLEI, SceneKind.MIXED)
"""The modality-like kinds: those ``mixed`` draws from and ``"all"`` cycles through. Not
``random``: adding it would change every scene drawn from a seed before it existed."""


MIN_SCENE_SIZE = 32
"""The smallest scene side: below it some kinds' objects shrink under a pixel."""


def check_scene_size(size: int) -> None:
    """Refuse a scene side under :data:`MIN_SCENE_SIZE`, saying why."""
    if size < MIN_SCENE_SIZE:
        raise ActiveSamError(f"Scenes are at least {MIN_SCENE_SIZE} pixels wide (objects "
                             f"smaller than a pixel are never drawn), not {size}.")  # fmt: skip


def make_scene(kind: str | SceneKind, rng: np.random.Generator, size: int = 256) -> Scene:
    """Generate one scene of ``kind`` (``mixed`` draws one of :data:`MODALITY_KINDS`, its own
    generic shapes included).

    Parameters
    ----------
    kind : str or SceneKind
        ``ct``, ``ultrasound``, ``nuclei``, ``mixed``, ``random`` or ``real-crops``.
    rng : np.random.Generator
        Source of randomness (a seeded generator makes scenes reproducible).
    size : int
        Side of the square image in pixels, at least :data:`MIN_SCENE_SIZE`.

    Raises
    ------
    ActiveSamError
        A size under :data:`MIN_SCENE_SIZE`.
    """
    kind = SceneKind(kind)
    check_scene_size(size)
    if kind is SceneKind.MIXED:
        kind = SceneKind(str(rng.choice(MODALITY_KINDS)))
    return _draw(kind, rng, size)


def _draw(kind: SceneKind, rng: np.random.Generator, size: int) -> Scene:
    while True:  # a scene whose objects were all occluded away is drawn again
        scene = _GENERATORS[kind](rng, size)
        if scene.labels.max() > 0:
            return scene


def training_scene(
    rng: np.random.Generator, size: int = 256, random_fraction: float = 0.5,
    real_fraction: float = 0.0,
) -> Scene:
    """One scene of the training mix: a crop of a real training image with probability
    ``real_fraction``, else a domain-randomised ``random`` scene with probability
    ``random_fraction``, else one of :data:`MODALITY_KINDS` drawn uniformly (``mixed`` meaning
    its own generic shapes here).

    Parameters
    ----------
    rng : np.random.Generator
    size : int
        Side of the square image in pixels.
    random_fraction : float
        Chance of a ``random`` scene among the generated ones, in [0, 1].
    real_fraction : float
        Chance of a ``real-crops`` scene (:mod:`.real_training`), in [0, 1]; at 0 no
        random number is drawn for it, so earlier seeds give the scenes they always gave.

    Raises
    ------
    ValueError
        A fraction outside [0, 1].
    """
    for name, value in (("random_fraction", random_fraction), ("real_fraction", real_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    if real_fraction and rng.random() < real_fraction:
        return real_training_scene(rng, size)
    if rng.random() < random_fraction:
        return _draw(SceneKind.RANDOM, rng, size)
    return _draw(MODALITY_KINDS[rng.integers(len(MODALITY_KINDS))], rng, size)


def scene_kinds(kind: str) -> list[SceneKind]:
    """The kinds a run of generated scenes cycles through: :data:`MODALITY_KINDS` for
    ``"all"`` (``random`` and ``real-crops`` only when asked for by name), else ``kind``
    alone.

    Raises
    ------
    ValueError
        An unknown kind.
    """
    return list(MODALITY_KINDS) if kind == "all" else [SceneKind(kind)]


def write_dataset(
    out, count: int, seed: int, kind: str | SceneKind = SceneKind.MIXED, size: int = 256
):
    """Write ``count`` scenes as ``out/images/NAME.tif`` (RGB for a scene in colour) and
    ``out/masks/NAME.tif``.

    Masks are int32 instance labels. ``out/objects.json`` records each image's kind, its
    intensity window and which objects lie inside which (child → parent). A generator,
    yielding the number of scenes written so far.
    """
    out = Path(out)
    check_new_folder(out, "the data set")
    check_scene_size(size)  # before any folder is made
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = {}
    for i in range(count):
        scene = make_scene(kind, rng, size)
        name = f"{scene.kind.value}_{i:04d}"
        photometric = "rgb" if scene.image.ndim == 3 else "minisblack"
        tifffile.imwrite(
            out / "images" / f"{name}.tif", scene.image, photometric=photometric, compression="zlib"
        )
        tifffile.imwrite(out / "masks" / f"{name}.tif", scene.labels, compression="zlib")
        index[name] = {
            "kind": scene.kind.value,
            "window": scene.window.to_dict(),
            "parents": {str(c): p for c, p in scene.parents.items()},
        }
        yield i + 1
    (out / "objects.json").write_text(json.dumps({"seed": seed, "images": index}, indent=1))


def make_ct_volume(
    rng: np.random.Generator, slices: int = 24, size: int = 256
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """A CT-like abdominal volume in Hounsfield units with organ ground truth.

    Organs are ellipsoid-like bodies whose cross-section changes from slice to slice: a
    liver with a lesion inside, two kidneys over part of the volume, a spleen, the aorta and
    the spine throughout, in a body outline on air.

    Returns
    -------
    volume : np.ndarray
        int16 ``(slices, size, size)`` Hounsfield units.
    labels : np.ndarray
        uint8 ``(slices, size, size)`` organ labels.
    names : dict of str to int
        Organ name → label.
    """
    shape = (size, size)
    c = np.array(shape) / 2
    names = {"liver": 1, "lesion": 2, "kidney_right": 3, "kidney_left": 4, "spleen": 5,
             "aorta": 6, "spine": 7}  # fmt: skip
    seeds = {name: int(rng.integers(1 << 31)) for name in names}
    volume = np.full((slices, *shape), -1000.0, np.float32)
    labels = np.zeros((slices, *shape), np.uint8)
    zc = (slices - 1) / 2

    def extent(z, centre, half):  # cross-section scale of an ellipsoid at slice z
        t = (z - centre) / half
        return np.sqrt(max(0.0, 1 - t * t))

    organs = [
        # name, centre offset (rows, cols) in units of size, radius, z-centre, z-half, HU
        ("liver", (-0.06, -0.13), 0.14, zc - 2, slices * 0.55, 60.0),
        ("spleen", (-0.06, 0.2), 0.07, zc - 4, slices * 0.3, 50.0),
        ("kidney_right", (0.14, -0.2), 0.055, zc + 3, slices * 0.3, 35.0),
        ("kidney_left", (0.14, 0.2), 0.055, zc + 4, slices * 0.3, 35.0),
    ]
    for z in range(slices):
        body = ellipse(shape, c, (size * 0.36, size * 0.45), 0)
        volume[z][body] = -100
        volume[z][body & ~ellipse(shape, c, (size * 0.3, size * 0.39), 0)] = 45
        for name, offset, radius, z0, half, hu in organs:
            scale = extent(z, z0, half)
            if scale * radius * size < 2:
                continue
            mask = body & blob(shape, c + np.array(offset) * size, radius * size * scale,
                               np.random.default_rng(seeds[name]), 0.3)  # fmt: skip
            volume[z][mask] = hu
            labels[z][mask] = names[name]
        lesion_scale = extent(z, zc - 2, 3.5)
        if lesion_scale > 0:
            lesion_rng = np.random.default_rng(seeds["lesion"])
            lesion_radius = 0.035 * size * lesion_scale
            lesion = blob(
                shape, c + np.array([-0.04, -0.15]) * size, lesion_radius, lesion_rng, 0.2
            )
            lesion &= labels[z] == names["liver"]
            volume[z][lesion] = 5.0
            labels[z][lesion] = names["lesion"]
        aorta = ellipse(shape, c + [0.1 * size, 0.02 * size], (0.025 * size,) * 2, 0)
        volume[z][aorta] = 180
        labels[z][aorta] = names["aorta"]
        spine = ellipse(shape, c + [0.22 * size, 0], (0.05 * size, 0.05 * size), 0)
        volume[z][spine] = 700
        labels[z][spine] = names["spine"]
    volume += rng.normal(0, 12, volume.shape).astype(np.float32)
    return np.clip(volume, -1024, 3071).astype(np.int16), labels, names


SAMPLE_SEED = 7
"""Seed of the sample images shipped in ``sample_data/``."""


def write_sample_data(folder) -> list:
    """Generate the shipped sample images and their ground truth into ``folder``.

    ``ct_volume.tif`` (int16 Hounsfield units, 24 × 256 × 256, 2.5 × 0.8 × 0.8 mm) with
    ``ct_volume_labels.tif``; ``ultrasound.tif`` and ``nuclei.tif`` (2D) with their
    ``*_labels.tif``; ``samples.json`` holds the volume's spacing and organ names. Returns
    the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SAMPLE_SEED)
    volume, labels, names = make_ct_volume(rng)
    items = {"ct_volume": (volume, labels, {"spacing": [2.5, 0.8, 0.8], "labels": names})}
    for kind in ("ultrasound", "nuclei"):
        scene = make_scene(kind, rng, 256)
        items[kind] = (scene.image, scene.labels.astype(np.uint16), {})
    written = []
    for name, (image, truth, _) in items.items():
        for suffix, data in (("", image), ("_labels", truth)):
            path = folder / f"{name}{suffix}.tif"
            tifffile.imwrite(path, data, photometric="minisblack", compression="zlib")
            written.append(path)
    index = folder / "samples.json"
    index.write_text(json.dumps({name: extra for name, (*_, extra) in items.items()}, indent=1))
    return [*written, index]
