"""dask.distributed clients for batch work: a LocalCluster by default, or a scheduler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dask
from distributed import Client, LocalCluster

from .errors import ActiveSamError

CONNECT_TIMEOUT = "10s"
"""How long to try reaching a dask scheduler before saying it cannot be reached."""

LOCAL_WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "1s",
}
"""Settings for local worker processes. dask sets ``MALLOC_TRIM_THRESHOLD_`` for its
workers by default; any fixed value turns off glibc's adaptive mmap threshold, so every
mask-sized array is mapped and unmapped afresh and an episode ran at half speed. Local
workers also skip dask's statistical profiler (a thread sampling stacks every 10 ms) and
sample system load once a second, leaving the GIL to the Python-heavy click loop."""


@dataclass(frozen=True)
class ClusterInfo:
    """How many workers a client has and how many torch threads each task should use."""

    workers: int
    torch_threads: int | None


@contextmanager
def dask_client(
    scheduler: str | None = None, workers: int | None = None
) -> Iterator[tuple[Client, ClusterInfo]]:
    """Connect to ``scheduler`` or start a LocalCluster of ``workers`` processes.

    A LocalCluster gets one thread per worker process, and each task is told to run torch
    with ``cores // workers`` threads so processes do not oversubscribe the CPU.

    Yields
    ------
    (Client, ClusterInfo)
    """
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ActiveSamError(
                f"Could not reach the dask scheduler at {scheduler} ({exc}): start it, check "
                "the address, or leave out --scheduler to run on this machine."
            ) from None
        with client:
            count = len(client.scheduler_info().get("workers", {}))
            yield client, ClusterInfo(workers=max(count, 1), torch_threads=None)
        return
    cores = os.cpu_count() or 1
    workers = cores if workers is None else workers
    if workers < 1:
        raise ActiveSamError(f"{workers} workers cannot run anything: ask for 1 or more.")
    with (
        dask.config.set(LOCAL_WORKER_CONFIG),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, ClusterInfo(workers=workers, torch_threads=max(cores // workers, 1))


def load_on_worker(ref):
    """``ref.load()``, once per dask worker process: later tasks reuse the loaded model.

    The model is kept on the worker object itself; outside a worker it is simply loaded.
    """
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not running on a dask worker
        return ref.load()
    models = worker.__dict__.setdefault("napari_active_sam_models", {})
    # A checkpoint rewritten in place (same path) must not be served from the cache.
    key = (ref, os.path.getmtime(ref.checkpoint) if ref.checkpoint else None)
    if key not in models:
        models[key] = ref.load()
    return models[key]
