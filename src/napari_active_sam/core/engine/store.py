"""The EmbeddingStore: embeddings in memory (an LRU in fp16) and, optionally, in zarr.

An embedding is only ever returned for the exact input it was computed from: each one
carries a signature over the slice's data, the model and its weights, the preprocessing and
the package version, and a lookup whose signature differs is a miss (the caller re-encodes).
On disk each entry also records a checksum of its array: an entry that is damaged (missing or
truncated chunks, garbled metadata, changed values) is a miss too, reported with a warning.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
import warnings
from collections import OrderedDict
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import torch
import zarr

from ... import __version__
from ..errors import EmbeddingStoreError
from .downloads import is_writable_dir

STORE_FORMAT = "napari-active-sam-embeddings/1"

# What zarr, numcodecs and json raise on files that are missing, truncated or garbled.
_READ_ERRORS = (OSError, ValueError, LookupError, TypeError, RuntimeError)


def _checksum(array: np.ndarray, signature: str, original_size, input_size,
              kind: str = "crc32c") -> str:  # fmt: skip
    """Checksum of an entry: its array's bytes and the record fields read with it.

    CRC-32C (hardware-accelerated, about 20 GB/s) by default, written as ``crc32c:<hex>``;
    a plain hex digest is the BLAKE2b of stores written by earlier versions, still read.
    """
    data = np.ascontiguousarray(array).tobytes()
    fields = json.dumps([signature, list(original_size), list(input_size)]).encode()
    if kind == "crc32c":
        return f"crc32c:{google_crc32c.extend(google_crc32c.value(data), fields):08x}"
    digest = hashlib.blake2b(data, digest_size=16)
    digest.update(fields)
    return digest.hexdigest()


def _intact(array: np.ndarray, signature: str, original_size, input_size, checksum) -> bool:
    """Whether ``checksum`` (from a record, of either kind) matches the entry."""
    kind = "crc32c" if str(checksum).startswith("crc32c:") else "blake2b"
    return _checksum(array, signature, original_size, input_size, kind) == checksum


def slice_signature(raw_slice: np.ndarray, model_id: str, preprocessing: dict[str, Any]) -> str:
    """Hex digest identifying an embedding's input.

    Covers the slice's bytes, shape and dtype, the model's name and weight hash, the
    preprocessing parameters and the package version.
    """
    data = np.ascontiguousarray(raw_slice)
    data_hash = hashlib.sha256(data.view(np.uint8).data if data.size else b"").hexdigest()
    record = {
        "data": data_hash,
        "shape": list(data.shape),
        "dtype": str(data.dtype),
        "model": model_id,
        "preprocessing": preprocessing,
        "version": __version__,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Embedding:
    """The encoder's output for one slice.

    Attributes
    ----------
    features : torch.Tensor
        float16 ``(C, h, w)`` on the CPU (``C`` = 256, ``h = w`` = 64 for 1024 models).
    original_size : tuple of int
        ``(H, W)`` of the slice before resizing.
    input_size : tuple of int
        ``(h, w)`` after ResizeLongestSide, before padding.
    signature : str
        See :func:`slice_signature`.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    signature: str

    @property
    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement()


def slice_key(index: tuple[int, ...]) -> str:
    """Store key of the slice at ``index`` (``"0012"`` for z = 12, ``"0003_0012"`` for 4D)."""
    return "_".join(f"{i:04d}" for i in index) if index else "image"


def writable_store_path(path: Path | str) -> Path:
    """``path`` as the folder of an embedding store that can be written.

    Raises
    ------
    EmbeddingStoreError
        ``path`` is a file, or a folder (or in one) that cannot be written.
    """
    path = Path(path)
    if path.is_file():
        raise EmbeddingStoreError(f"{path} is a file: give the folder of an embedding store "
                                  "(the one precompute wrote, or a new one).")  # fmt: skip
    if not is_writable_dir(path.parent) or (path.exists() and not is_writable_dir(path)):
        raise EmbeddingStoreError(f"Cannot write the embedding store {path}: choose a folder "
                                  "you can write to.")  # fmt: skip
    return path


class EmbeddingStore:
    """Embeddings of one image's slices: an LRU in memory and, optionally, a zarr group.

    Parameters
    ----------
    model_id : str
        :attr:`LoadedModel.model_id` of the model whose embeddings this store holds.
    max_bytes : int
        Memory budget of the LRU (fp16 features); the least recently used slices are dropped
        from memory first (they stay on disk if a path is set). The newest slice is always
        kept, even if alone it exceeds the budget.
    path : Path, optional
        A zarr directory. Reopening it later loads slices lazily, on first use. If the folder
        cannot be written the store warns and stays in memory only.
    overwrite : bool
        Empty a store at ``path`` that holds another model's embeddings instead of raising.

    Attributes
    ----------
    damaged : set of str
        Keys of disk entries found damaged since the store was opened (each is warned about
        once and is a miss, so the caller re-encodes it).

    Raises
    ------
    EmbeddingStoreError
        If ``path`` holds embeddings of another model (and ``overwrite`` is False), is a
        non-empty folder that is not an embedding store, or cannot be opened.

    Notes
    -----
    A writer clears an entry's record, writes its array, then writes the record (signature,
    sizes, checksum) last, each file atomically. A reader in another process therefore gets
    the whole old entry, the whole new one, or a miss.
    """

    def __init__(
        self,
        model_id: str,
        max_bytes: int = 1 << 30,
        path: Path | str | None = None,
        overwrite: bool = False,
    ):
        self.model_id = model_id
        self.max_bytes = int(max_bytes)
        self._memory: OrderedDict[str, Embedding] = OrderedDict()
        self._memory_bytes = 0
        self._lock = threading.Lock()
        self.path: Path | None = None
        self._group: zarr.Group | None = None
        self.damaged: set[str] = set()
        self._trusted: dict[str, str] = {}  # key → write id of an entry known to be intact
        self._unwritten: dict[str, Embedding] = {}  # queued for the writer thread
        self._writer: ThreadPoolExecutor | None = None
        self._writes: list[futures.Future] = []
        if path is not None:
            self._open(Path(path), overwrite)

    # ------------------------------------------------------------------------------ disk
    def _open(self, path: Path, overwrite: bool) -> None:
        try:
            writable_store_path(path)
        except EmbeddingStoreError as exc:  # kept in memory: callers that must not, check first
            warnings.warn(f"{exc} Embeddings are kept in memory only and will be recomputed "
                          "next time.", RuntimeWarning, stacklevel=3)  # fmt: skip
            return
        if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").exists():
            raise EmbeddingStoreError(
                f"{path} is not a napari-active-sam embedding store: choose an empty or new folder."
            )
        try:
            group = zarr.open_group(path, mode="a")
            attrs = dict(group.attrs)
        except _READ_ERRORS as exc:
            raise EmbeddingStoreError(
                f"The embedding store {path} cannot be opened ({exc}): delete it or choose "
                "another --out."
            ) from exc
        if attrs and attrs.get("format") != STORE_FORMAT:
            raise EmbeddingStoreError(
                f"{path} is a zarr group but not a napari-active-sam embedding store: choose an "
                "empty or new folder."
            )
        stored_model = attrs.get("model_id")
        if stored_model is not None and stored_model != self.model_id:
            if not overwrite:
                raise EmbeddingStoreError(
                    f"The embedding store {path} holds embeddings of model {stored_model}, not "
                    f"{self.model_id}. Choose another store path, or overwrite it "
                    "(precompute --overwrite) to recompute with this model."
                )
            group, attrs = zarr.open_group(path, mode="w"), {}
        identity = {"format": STORE_FORMAT, "model_id": self.model_id}
        if attrs != identity:  # rewriting it on every open would race with other readers
            group.attrs.update(identity)
        self.path = path
        self._group = group

    def _record(self, key: str) -> dict[str, Any] | None:
        """The entry's attributes, or None if there is no entry (raises if unreadable)."""
        try:
            return dict(self._group[key].attrs)
        except KeyError:
            return None

    def _read_disk(self, key: str, signature: str) -> Embedding | None:
        """The entry of ``key`` if it matches ``signature`` and its checksum, else None.

        An entry this store wrote, or has already checked, since it was opened is not
        checked again: its record's write id says it is still the same entry.
        """
        if self._group is None:
            return None
        record = None
        try:
            try:
                array = self._group[key]  # one read: the array's metadata holds the record
            except KeyError:
                return None
            record = dict(array.attrs)
            if record.get("signature") != signature:
                return None
            features = np.asarray(array[...], dtype=np.float16)
            original_size = tuple(int(n) for n in record["original_size"])
            input_size = tuple(int(n) for n in record["input_size"])
            trusted = record.get("write") is not None and self._trusted.get(key) == record["write"]
            if trusted or _intact(features, signature, original_size, input_size,
                                  record.get("checksum")):  # fmt: skip
                self._trusted[key] = record.get("write")
                return Embedding(
                    features=torch.from_numpy(features),
                    original_size=original_size,
                    input_size=input_size,
                    signature=signature,
                )
            problem = "its values or sizes do not match its checksum"
        except _READ_ERRORS as exc:
            problem = f"it cannot be read: {exc!r}"
        if self._unchanged(key, record):  # else another writer is replacing it: a plain miss
            self._report_damage(key, problem)
        return None

    def _unchanged(self, key: str, record: dict[str, Any] | None) -> bool:
        try:
            return self._record(key) == record
        except _READ_ERRORS:
            return record is None

    def _report_damage(self, key: str, problem: str) -> None:
        if key in self.damaged:
            return
        self.damaged.add(key)
        warnings.warn(
            f"The stored embedding {key} in {self.path} is damaged ({problem}); it will be "
            "recomputed.",
            RuntimeWarning,
            stacklevel=4,
        )

    def _empty_array(self, key: str, shape: tuple[int, ...]) -> zarr.Array:
        """The entry's array, its record cleared, or a new one if it is missing or unfit."""
        try:
            array = self._group[key]
        except _READ_ERRORS:
            array = None
        fits = isinstance(array, zarr.Array) and array.dtype == np.float16
        if fits and array.shape == array.chunks == shape:
            array.attrs.put({})  # readers see no entry until the new record is written
            return array
        return self._group.create_array(  # fp16 features hardly compress: store them raw
            key, shape=shape, dtype="float16", chunks=shape, compressors=None, overwrite=True
        )

    def _write_disk(self, key: str, embedding: Embedding) -> None:
        if self._group is None:
            return
        features = embedding.features.numpy()
        write = uuid.uuid4().hex  # tells a rewrite from damage to a reader
        try:
            self._trusted.pop(key, None)
            array = self._empty_array(key, features.shape)
            array[...] = features
            # The record last: a crash or a reader mid-write finds no (or the old) record.
            array.attrs.put(
                {
                    "signature": embedding.signature,
                    "original_size": list(embedding.original_size),
                    "input_size": list(embedding.input_size),
                    "checksum": _checksum(features, embedding.signature,
                                          embedding.original_size, embedding.input_size),
                    "write": write,
                }
            )
            self._trusted[key] = write
        except OSError as exc:
            raise EmbeddingStoreError(
                f"Cannot write to the embedding store {self.path} ({exc}): free some space or "
                "choose another --out."
            ) from exc

    # ---------------------------------------------------------------------------- public
    @property
    def memory_bytes(self) -> int:
        """Bytes held by features in memory."""
        return self._memory_bytes

    def has(self, key: str, signature: str) -> bool:
        """True if a valid embedding for ``key`` is in memory or intact on disk.

        A disk entry is read and its checksum checked, but not kept in memory.
        """
        with self._lock:
            if self._held(key, signature) is not None:
                return True
            return self._read_disk(key, signature) is not None

    def get(self, key: str, signature: str) -> Embedding | None:
        """The embedding of ``key`` if its signature equals ``signature`` and it is intact."""
        with self._lock:
            embedding = self._held(key, signature)
            if embedding is None:
                embedding = self._read_disk(key, signature)
            if embedding is not None:
                self._remember(key, embedding)
            return embedding

    def _held(self, key: str, signature: str) -> Embedding | None:
        """The embedding of ``key`` in memory or waiting to be written, if it matches."""
        cached = self._memory.get(key)
        if cached is not None:
            if cached.signature == signature:
                self._memory.move_to_end(key)
                return cached
            self._drop(key)
        waiting = self._unwritten.get(key)
        return waiting if waiting is not None and waiting.signature == signature else None

    def put(self, key: str, embedding: Embedding, wait: bool = True) -> None:
        """Keep ``embedding`` under ``key`` in memory and, if the store has a path, on disk.

        With ``wait=False`` the disk write is queued on the store's writer thread and this
        returns at once (the embedding is served from memory meanwhile): the caller can
        encode the next slices while this one is written. :meth:`flush` waits for the
        queued writes; a write that failed raises there, or at the next ``put``.
        """
        if embedding.features.dtype != torch.float16 or embedding.features.device.type != "cpu":
            embedding = Embedding(
                embedding.features.to("cpu", torch.float16),
                embedding.original_size,
                embedding.input_size,
                embedding.signature,
            )
        self._raise_failed_write()
        if wait or self._group is None:
            with self._lock:
                self._write_disk(key, embedding)
                self._remember(key, embedding)
            return
        with self._lock:
            self._remember(key, embedding)
            self._unwritten[key] = embedding
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="napari-active-sam-store")
        self._writes.append(self._writer.submit(self._write_queued, key, embedding))

    def _write_queued(self, key: str, embedding: Embedding) -> None:
        with self._lock:
            try:
                self._write_disk(key, embedding)
            finally:
                if self._unwritten.get(key) is embedding:
                    del self._unwritten[key]

    def _raise_failed_write(self) -> None:
        finished = [write for write in self._writes if write.done()]
        self._writes = [write for write in self._writes if not write.done()]
        for write in finished:
            write.result()

    def attach(self, path: Path | str | None) -> int:
        """Keep the embeddings on disk at ``path`` from now on (an embedding store, such as
        ``precompute`` wrote, or a new folder): what it holds is read when asked for, and
        the embeddings held in memory now that it lacks are written there. Returns how many
        were written. None: in memory only from now on (the disk store is left as it is).

        Raises
        ------
        EmbeddingStoreError
            ``path`` cannot be written, is not an embedding store, or holds another model's
            embeddings; the store then goes on as it was.
        """
        path = None if path is None else writable_store_path(path)
        self.flush(raise_errors=False)
        if path is None:
            with self._lock:
                self.path, self._group, self._trusted = None, None, {}
            return 0
        with self._lock:
            before = self.path, self._group, self._trusted
            self.path, self._group, self._trusted = None, None, {}
            try:
                self._open(path, overwrite=False)
            except EmbeddingStoreError:
                self.path, self._group, self._trusted = before
                raise
            written = 0
            for key, embedding in list(self._memory.items()):
                if self._read_disk(key, embedding.signature) is None:
                    self._write_disk(key, embedding)
                    written += 1
            return written

    def flush(self, raise_errors: bool = True) -> None:
        """Wait for the writes queued by ``put(..., wait=False)``.

        Raises
        ------
        EmbeddingStoreError
            The first queued write that failed (the embedding stays in memory); with
            ``raise_errors=False`` it is raised by the next ``put`` or ``flush`` instead.
        """
        futures.wait(self._writes)
        if raise_errors:
            self._raise_failed_write()

    def _drop(self, key: str) -> None:
        removed = self._memory.pop(key)
        self._memory_bytes -= removed.nbytes

    def _remember(self, key: str, embedding: Embedding) -> None:
        if key in self._memory:
            self._drop(key)
        self._memory[key] = embedding
        self._memory_bytes += embedding.nbytes
        while self._memory_bytes > self.max_bytes and len(self._memory) > 1:
            self._drop(next(iter(self._memory)))
