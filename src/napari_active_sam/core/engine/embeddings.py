"""Image encoder runs: one batch (:class:`SliceEncoder`), a volume into an
:class:`~napari_active_sam.core.engine.store.EmbeddingStore` (:func:`encode_slices`, on a
dask cluster :func:`precompute`), one slice on demand (:func:`embed_slice`)."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from ..enums import Precision
from ..errors import EmbeddingStoreError, ModelError
from ..progress import Progress
from .checkpoints import LoadedModel, ModelRef
from .device import DEVICE_ENV, encoder_arithmetic, resolve_precision, to_device, to_host
from .preprocess import SliceSource, to_sam_rgb
from .store import Embedding, EmbeddingStore, slice_key, slice_signature

T = TypeVar("T")


class SliceEncoder:
    """Runs a model's image encoder as ``SamPredictor.set_image`` does, batch by batch.

    On a CPU each image is resized exactly as ``SamPredictor.set_image`` resizes it (PIL,
    bilinear) and encoded in fp32. On a CUDA device the uint8 images travel through pinned
    memory and are resized (bilinear, antialiased), normalised and padded on the device,
    and the encoder runs in the chosen precision (bf16 autocast with TF32 by default). The
    features come back as fp16 either way.

    Parameters
    ----------
    model : LoadedModel
        The model; its device is used.
    precision : Precision or str, optional
        The encoder's arithmetic (default: ``$NAPARI_ACTIVE_SAM_PRECISION``, else auto).
    resize_on_device : bool, optional
        Resize on the model's device rather than with PIL on the host (default: on CUDA).
    """

    def __init__(
        self,
        model: LoadedModel,
        precision: Precision | str | None = None,
        resize_on_device: bool | None = None,
    ):
        self.model = model
        self.transform = ResizeLongestSide(model.architecture.img_size)
        self.precision = resolve_precision(precision, model.device)
        if resize_on_device is None:
            resize_on_device = model.device.type == "cuda"
        self.resize_on_device = bool(resize_on_device)

    def _input_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """``(3, h, w)`` float32 on the device: ``rgb`` resized to the model's input."""
        device = self.model.device
        if not self.resize_on_device:
            resized = torch.as_tensor(self.transform.apply_image(rgb), device=device)
            return resized.permute(2, 0, 1).float()
        image = to_device(np.ascontiguousarray(rgb), device).permute(2, 0, 1)[None].float()
        size = self.transform.get_preprocess_shape(*rgb.shape[:2], self.transform.target_length)
        if tuple(size) != tuple(rgb.shape[:2]):
            image = F.interpolate(
                image, size, mode="bilinear", align_corners=False, antialias=True
            ).round_().clamp_(0, 255)  # what a uint8 image resized on the host holds
        return image[0]

    def encode(self, images: Sequence[np.ndarray], signatures: Sequence[str]) -> list[Embedding]:
        """Encode uint8 ``(H, W, 3)`` images (any sizes) in one encoder pass.

        Each image is resized and padded to the model's square input, so sizes may differ.
        A batch that does not fit in the GPU's memory is encoded in halves.

        Returns
        -------
        list of Embedding
            fp16 features on the CPU, one per image.
        """
        try:
            return self._encode(images, signatures)
        except torch.cuda.OutOfMemoryError as error:
            if len(images) == 1:
                raise ModelError(
                    f"The GPU has no room to encode one slice with {self.model.name} "
                    f"({error}): close other programs that use it, choose a smaller model, "
                    f"or set {DEVICE_ENV}=cpu."
                ) from error
        torch.cuda.empty_cache()
        half = len(images) // 2
        return self.encode(images[:half], signatures[:half]) + self.encode(
            images[half:], signatures[half:]
        )

    @torch.inference_mode()
    def _encode(self, images: Sequence[np.ndarray], signatures: Sequence[str]) -> list[Embedding]:
        sam = self.model.sam
        inputs = [self._input_tensor(image) for image in images]
        batch = torch.stack([sam.preprocess(t[None])[0] for t in inputs])
        with encoder_arithmetic(self.precision, self.model.device):
            features = self.model.embed_images(batch)
        (host,) = to_host(features.to(torch.float16))
        # Own copies when the batch shares one buffer or lives in pinned (scarce) memory.
        shared = len(images) > 1 or self.model.device.type != "cpu"
        return [
            Embedding(
                features=torch.from_numpy(host[i].copy() if shared else host[i]),
                original_size=tuple(int(s) for s in image.shape[:2]),
                input_size=tuple(int(s) for s in inputs[i].shape[-2:]),
                signature=signatures[i],
            )
            for i, image in enumerate(images)
        ]


def default_batch_size(model: LoadedModel) -> int:
    """Slices per encoder pass: 8 on a GPU (halved where memory runs out); 1 on a CPU, where
    batching gains nothing and delays the first slice."""
    return 8 if model.device.type == "cuda" else 1


def encode_slices(
    model: LoadedModel,
    source: SliceSource,
    store: EmbeddingStore,
    indices: Iterable[tuple[int, ...]] | None = None,
    batch_size: int | None = None,
    limits: tuple[float, float] | None = None,
    precision: Precision | str | None = None,
) -> Generator[Progress, None, None]:
    """Encode slices of ``source`` into ``store``, skipping those already there.

    A generator: each ``next`` encodes one batch and yields :class:`Progress` (slices done
    out of slices asked for), so a GUI worker can show progress and cancel between batches.
    The work is pipelined: while the encoder runs on one batch, a thread reads, checks and
    prepares the next and the store writes the last, so on a GPU the encoder sets the pace.
    Every slice is in ``store`` (in memory at once, on disk when the generator finishes or
    is closed) by the time its progress is yielded.

    Parameters
    ----------
    model : LoadedModel
        The model to encode with.
    source : SliceSource
        Image and preprocessing.
    store : EmbeddingStore
        Where embeddings go; it must belong to ``model``.
    indices : iterable of tuple, optional
        Leading indices to encode, in order (put the slice the user looks at first).
        Default: every slice.
    batch_size : int, optional
        Slices per encoder pass; default :func:`default_batch_size`.
    limits : tuple of float, optional
        Resolved intensity window; default resolved once from ``source``.
    precision : Precision or str, optional
        The encoder's arithmetic (see :class:`SliceEncoder`).
    """
    if store.model_id != model.encoder_id:
        raise EmbeddingStoreError(
            f"This embedding store belongs to {store.model_id}, not {model.encoder_id}."
        )
    indices = list(source.slice_indices() if indices is None else indices)
    limits = limits or source.limits()
    parameters = source.parameters(limits)
    batch_size = batch_size or default_batch_size(model)
    encoder = SliceEncoder(model, precision)
    total = len(indices)
    if total == 0:
        yield Progress(0, 0, "nothing to encode")
        return

    def batches() -> Iterator[tuple[int, list[tuple[str, str, np.ndarray]]]]:
        """``(slices found in the store, batch to encode)``: a batch when one is full or at
        the end, a lone stored slice while no batch is being gathered."""
        pending: list[tuple[str, str, np.ndarray]] = []
        stored = 0
        for position, index in enumerate(indices):
            raw = source.raw_slice(index)
            key, signature = slice_key(index), slice_signature(raw, model.encoder_id, parameters)
            if store.has(key, signature):
                stored += 1
            else:
                pending.append((key, signature, to_sam_rgb(raw, limits)))
            if pending and (len(pending) == batch_size or position == total - 1):
                yield stored, pending
                pending, stored = [], 0
            elif not pending:
                yield stored, []
                stored = 0

    done = 0
    try:
        for stored, batch in prepared_ahead(batches()):
            done += stored
            if not batch:
                yield Progress(done, total, f"slice {done}/{total} already encoded")
                continue
            embeddings = encoder.encode([rgb for *_, rgb in batch], [s for _, s, _ in batch])
            for (key, _, _), embedding in zip(batch, embeddings, strict=True):
                store.put(key, embedding, wait=False)
            done += len(batch)
            yield Progress(done, total, f"encoded {done}/{total} slices")
        store.flush()
    finally:
        store.flush(raise_errors=False)  # closed early: what was encoded still reaches disk


def prepared_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of ``items``, each next one produced on a thread while the caller works
    on the current one (reading and hashing slices while the encoder runs)."""
    end = object()
    with ThreadPoolExecutor(1, thread_name_prefix="napari-active-sam-prepare") as pool:
        upcoming = pool.submit(next, items, end)
        while (item := upcoming.result()) is not end:
            upcoming = pool.submit(next, items, end)
            yield item


def embed_slice(
    model: LoadedModel,
    source: SliceSource,
    store: EmbeddingStore,
    index: tuple[int, ...] = (),
    limits: tuple[float, float] | None = None,
) -> Embedding:
    """The embedding of one slice: from ``store`` if valid, else encoded and stored."""
    limits = limits or source.limits()
    raw = source.raw_slice(index)
    key = slice_key(index)
    signature = slice_signature(raw, model.encoder_id, source.parameters(limits))
    embedding = store.get(key, signature)
    if embedding is None:
        (embedding,) = SliceEncoder(model).encode([to_sam_rgb(raw, limits)], [signature])
        store.put(key, embedding)
    return embedding


def _encode_on_worker(
    ref: ModelRef,
    images: list[np.ndarray],
    signatures: list[str],
    torch_threads: int | None,
    precision: str | None = None,
) -> list[tuple[np.ndarray, tuple[int, int], tuple[int, int], str]]:
    """dask task: encode a chunk of uint8 RGB slices; plain arrays travel back."""
    from ..cluster import load_on_worker

    if torch_threads:
        torch.set_num_threads(torch_threads)
    model = load_on_worker(ref)
    encoder = SliceEncoder(model, precision)
    step = default_batch_size(model)
    results = []
    for start in range(0, len(images), step):
        batch = encoder.encode(images[start : start + step], signatures[start : start + step])
        results += [(e.features.numpy(), e.original_size, e.input_size, e.signature) for e in batch]
    return results


def precompute(
    ref: ModelRef,
    source: SliceSource,
    store: EmbeddingStore,
    client: Any,
    torch_threads: int | None = None,
    chunk_size: int = 8,
    precision: Precision | str | None = None,
) -> Generator[Progress, None, int]:
    """Encode every slice of ``source`` on a dask cluster into ``store``; resumable.

    Slices already in the store with a valid signature and checksum are skipped; damaged
    ones are encoded again. Chunks of slices are encoded by workers (each loads the model
    once per chunk) and written by this process as they finish, so an interrupted run keeps
    what it finished.

    Parameters
    ----------
    ref : ModelRef
        The model; workers load it themselves.
    source : SliceSource
        Image and preprocessing.
    store : EmbeddingStore
        Destination; its ``model_id`` must be ``ref.encoder_id()``.
    client : distributed.Client
        A connected client.
    torch_threads : int, optional
        Torch threads per task (see :func:`~napari_active_sam.core.cluster.dask_client`).
    chunk_size : int
        Slices per task.
    precision : Precision or str, optional
        The encoder's arithmetic on the workers (see :class:`SliceEncoder`).

    Returns
    -------
    int
        Damaged entries that were encoded again.
    """
    from distributed import as_completed

    identity = ref.encoder_id()
    if store.model_id != identity:
        raise EmbeddingStoreError(
            f"This embedding store belongs to {store.model_id}, not {identity}."
        )
    limits = source.limits()
    parameters = source.parameters(limits)
    indices = source.slice_indices()
    total = len(indices)
    todo: list[tuple[str, str, tuple[int, ...]]] = []
    for index in indices:
        key = slice_key(index)
        signature = slice_signature(source.raw_slice(index), identity, parameters)
        if not store.has(key, signature):
            todo.append((key, signature, index))
    done = total - len(todo)
    repairs = sum(key in store.damaged for key, *_ in todo)
    message = f"{done} of {total} slices already in the store"
    yield Progress(done, total, message + (f", {repairs} damaged" if repairs else ""))
    if not todo:
        return 0
    futures = {}
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        images = [to_sam_rgb(source.raw_slice(index), limits) for *_, index in chunk]
        future = client.submit(
            _encode_on_worker,
            ref,
            images,
            [signature for _, signature, _ in chunk],
            torch_threads,
            None if precision is None else str(precision),
            pure=False,
        )
        futures[future] = [key for key, *_ in chunk]
    try:
        for future in as_completed(futures):
            for key, (features, original, resized, signature) in zip(
                futures[future], future.result(), strict=True
            ):
                embedding = Embedding(
                    torch.from_numpy(features), tuple(original), tuple(resized), signature
                )
                store.put(key, embedding, wait=False)
                done += 1
            yield Progress(done, total, f"encoded {done}/{total} slices")
        store.flush()
    finally:
        store.flush(raise_errors=False)  # stopped early: what arrived still reaches disk
    return repairs
