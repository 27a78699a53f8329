"""Partition-parallel work on Dask: one ``map`` over partitions, in this process or on a cluster.

Validating and featurizing many daily partitions and batch-scoring many days each apply
one function to partitions that do not depend on each other. :func:`partition_map` opens
the place to run them, from the profile's ``dask`` settings (``configs/profiles/``):

* fewer partitions than ``min_partitions`` (or no settings): one after another in this
  process, since a cluster costs seconds to start and its workers seconds to import the
  libraries the step needs;
* no ``scheduler_address`` (the local profile): a ``distributed.LocalCluster`` of
  ``workers`` processes with ``threads_per_worker`` threads, started for the job and
  closed after it. Each worker gets one OpenMP/BLAS thread (``OMP_NUM_THREADS=1``), so
  the workers do not oversubscribe the cores between them;
* a ``scheduler_address`` (the production profile, ``FRAUD_PROFILE__DASK__SCHEDULER_ADDRESS``):
  the running cluster at that address. Its workers run this package from the same
  environment and must see the same state folder (one host, or a shared path).

What must stay in order stays with the caller (the data gate's ledger is written day by
day in the calling process); only the independent part of each partition is mapped, and
:meth:`PartitionMap.map` returns results in the order of the items, whatever order they
finished in. Functions and items travel by pickle: module-level functions (or
``functools.partial`` of them) and small arguments; a large shared argument (a model)
goes as a keyword of ``map``, sent to the cluster once. Dask is imported only when a
cluster is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from fraud_detection.config import DaskSettings
from fraud_detection.errors import FraudError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["ADDRESS_ENV", "PartitionMap", "SchedulerUnreachableError", "partition_map"]

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[str], None]

ADDRESS_ENV = "FRAUD_PROFILE__DASK__SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer in this time is reported down
WORKERS_TIMEOUT_S = 30  # how long a reachable scheduler may take to have one worker
# One thread for OpenMP and the BLAS libraries in each worker process: with two workers
# on two cores, scikit-learn's OpenMP threads would otherwise fight over the same cores.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class SchedulerUnreachableError(FraudError):
    """The profile names a Dask scheduler that does not answer (or has no workers)."""


class PartitionMap:
    """Runs a function over partitions where :func:`partition_map` decided: here or on Dask.

    ``where`` says it in words for the command's output: "in this process", "on a local
    Dask cluster of 2 workers" or "on the Dask cluster at tcp://...".
    """

    def __init__(self, where: str, client: Client | None, progress: Progress | None) -> None:
        self.where = where
        self._client = client
        self._say = progress or (lambda _message: None)
        self._preloading: list[Any] = []  # futures kept so the scheduler does not drop them

    def preload(self, modules: Sequence[str]) -> None:
        """Start importing ``modules`` on every worker now, without waiting: the imports
        (seconds for Feast or Great Expectations) then overlap the caller's own work
        until the first :meth:`map`, whose tasks queue behind them."""
        if self._client is None or not modules:
            return
        for worker in self._client.scheduler_info(n_workers=-1).get("workers", {}):
            self._preloading.append(
                self._client.submit(
                    _import_modules,
                    tuple(modules),
                    workers=[worker],
                    allow_other_workers=False,
                    pure=False,
                )
            )

    @property
    def parallel(self) -> bool:
        """Whether the work goes to a Dask cluster (else it runs in this process)."""
        return self._client is not None

    def say(self, message: str) -> None:
        """A progress line (``... message``), if the caller asked for them."""
        self._say(f"... {message}")

    def map(
        self,
        fn: Callable[..., R],
        items: Sequence[T],
        *,
        done: str = "processed",
        noun: str = "partitions",
        **shared: Any,
    ) -> list[R]:
        """``[fn(item, **shared) for item in items]``, on the cluster when there is one.

        ``shared`` keyword arguments are the same for every item (sent to the cluster
        once). Prints ``... <done> 7/20 <noun>`` as items finish. The first error raised
        by ``fn`` is raised here (the other items are cancelled).
        """
        total = len(items)
        if self._client is None:
            results = []
            for index, item in enumerate(items, 1):
                results.append(fn(item, **shared))
                self.say(f"{done} {index}/{total} {noun}")
            return results
        return self._map_on_cluster(self._client, fn, items, done, noun, shared)

    def call(self, fn: Callable[[], R]) -> R:
        """``fn()`` on a worker of the cluster (it has the libraries imported), else here."""
        if self._client is None:
            return fn()
        future = self._client.submit(fn, pure=False)
        try:
            result: R = future.result()
        except BaseException:
            future.cancel()
            raise
        return result

    def _map_on_cluster(
        self,
        client: Client,
        fn: Callable[..., R],
        items: Sequence[T],
        done: str,
        noun: str,
        shared: dict[str, Any],
    ) -> list[R]:
        from distributed import as_completed

        total = len(items)
        if not total:
            return []
        # One copy of each shared argument on the cluster, not one per task.
        kwargs = {name: client.scatter(value, broadcast=True) for name, value in shared.items()}
        futures = [client.submit(fn, item, pure=False, **kwargs) for item in items]
        position = {future.key: index for index, future in enumerate(futures)}
        results: list[Any] = [None] * total
        finished = 0
        try:
            for future in as_completed(futures, loop=client.loop):
                results[position[future.key]] = _result(future, items[position[future.key]])
                finished += 1
                self.say(f"{done} {finished}/{total} {noun}")
        except BaseException:
            client.cancel(futures)
            raise
        return results


def _import_modules(modules: tuple[str, ...]) -> None:
    import importlib

    for module in modules:
        importlib.import_module(module)


def _result(future: Any, item: Any) -> Any:
    """A finished future's value; a worker lost while running it is a one-line error."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        raise FraudError(
            f"Dask workers died while processing {item}: out of memory? ({exc}); "
            "fewer workers or smaller partitions"
        ) from exc


@contextlib.contextmanager
def partition_map(
    settings: DaskSettings | None,
    partitions: int,
    *,
    progress: Progress | None = None,
    preload: Sequence[str] = (),
) -> Iterator[PartitionMap]:
    """Where to run a job of ``partitions`` partitions; yields a :class:`PartitionMap`.

    ``settings`` None, or fewer partitions than ``settings.min_partitions``: this process.
    Else a local cluster started for the job (closed on the way out) or the running one at
    ``settings.scheduler_address``; an unreachable scheduler raises
    :class:`SchedulerUnreachableError` with what to do. ``preload``: modules the workers
    start importing at once (:meth:`PartitionMap.preload`).
    """
    if settings is None or partitions < settings.min_partitions:
        why = (
            f" ({partitions} partition(s), fewer than min_partitions={settings.min_partitions})"
            if settings is not None and partitions > 1
            else ""
        )
        yield PartitionMap(f"in this process{why}", None, progress)
        return
    if settings.scheduler_address:
        with _remote_client(settings.scheduler_address) as (client, workers):
            where = f"on the Dask cluster at {settings.scheduler_address} ({workers} workers)"
            run = PartitionMap(where, client, progress)
            run.preload(preload)
            yield run
        return
    if progress is not None:
        progress(f"... starting a local Dask cluster of {settings.workers} workers")
    with _local_client(settings) as client:
        run = PartitionMap(
            f"on a local Dask cluster of {settings.workers} workers", client, progress
        )
        run.preload(preload)
        yield run


@contextlib.contextmanager
def _quiet_distributed() -> Iterator[None]:
    """The job cluster's scheduler runs in this process: its INFO lines (workers joining
    and leaving) would reach any root handler (Prefect's, in a flow). Errors still do."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _local_client(settings: DaskSettings) -> Iterator[Client]:
    import dask
    from distributed import Client, LocalCluster

    with (
        _quiet_distributed(),
        # The workers' statistical profiler samples every stack 100 times a second for a
        # dashboard a job's cluster does not have (the workers get this config at spawn).
        dask.config.set({"distributed.worker.profile.enabled": False}),
        LocalCluster(
            n_workers=settings.workers,
            threads_per_worker=settings.threads_per_worker,
            processes=True,
            host="127.0.0.1",  # the job's cluster is reachable from this machine only
            # Any free port for the scheduler's web server (the default 8787 may be taken
            # by another cluster; there is no dashboard without bokeh anyway).
            dashboard_address="127.0.0.1:0",
            # Errors reach the caller as exceptions; the workers' own logs would repeat them.
            silence_logs=logging.CRITICAL,
            env=WORKER_ENV,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _unreachable(address: str, detail: str) -> SchedulerUnreachableError:
    if os.environ.get(ADDRESS_ENV):
        how = f"unset {ADDRESS_ENV}"
    else:
        how = f"set {ADDRESS_ENV}= (empty: a local cluster for the job)"
    return SchedulerUnreachableError(
        f"cannot reach the Dask scheduler at {address}: start it (make prod-up) or {how} ({detail})"
    )


@contextlib.contextmanager
def _remote_client(address: str) -> Iterator[tuple[Client, int]]:
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _unreachable(address, detail) from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError as exc:
            raise _unreachable(
                address, f"it has no worker after {WORKERS_TIMEOUT_S} s: start `dask worker`"
            ) from exc
        workers = len(client.scheduler_info().get("workers", {}))
        yield client, workers
