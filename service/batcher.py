"""An asyncio micro-batcher: concurrent requests merged into one model call, run off the event loop.

Each request submits its items (texts) under a key (its decoding settings); one worker task takes
the oldest request, then waits up to ``max_wait_ms`` for more until ``max_batch_size`` items are
gathered, groups them by key and runs each group in an executor thread. The queue is bounded (in
items): a request that does not fit gets :class:`QueueFull` at once. A request that is cancelled or
times out while queued is skipped; one cancelled while its batch runs just drops its results, and
the other requests of the batch are answered as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol


class QueueFull(Exception):
    """The batcher's queue cannot take the request now."""


class BatchObserver(Protocol):
    """What the batcher reports (see :class:`service.metrics.Metrics`)."""

    def batch_ran(self, size: int, seconds: float) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


@dataclass
class _Request:
    key: Hashable
    items: Sequence[Any]
    future: asyncio.Future = field(repr=False)
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Merges concurrent requests into batches.

    Args:
        run_batch: ``run_batch(key, items) -> results``, one result per item, called in ``executor``.
        max_batch_size: Items per batch (a larger single request runs alone, whole).
        max_wait_ms: How long to wait for more requests once one is there; 0 takes only what is
            already queued.
        max_queue: Items waiting at most.
        executor: Where ``run_batch`` runs (the event loop's default executor if None).
        observer: Receives batch sizes, queue waits and depths.
    """

    def __init__(
        self,
        run_batch: Callable[[Hashable, list[Any]], Sequence[Any]],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be positive, max_wait_ms not negative")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.executor = executor
        self.observer = observer
        self.depth = 0  # items queued, not yet taken into a batch
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        """Starts the worker task on the running loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stops the worker; requests still queued fail with :class:`RuntimeError`."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._queue is not None and not self._queue.empty():
            req = self._queue.get_nowait()
            if not req.future.done():
                req.future.set_exception(RuntimeError("the service is shutting down"))
        self.depth = 0

    async def submit(self, key: Hashable, items: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Queues ``items`` and waits for their results.

        Raises:
            QueueFull: If the queue holds too many items to take these.
            TimeoutError: If the results take longer than ``timeout`` seconds.
            RuntimeError: If the batcher is not running.
        """
        if self._queue is None or self._worker is None or self._worker.done():
            raise RuntimeError("the micro-batcher is not running")
        if self.depth + len(items) > self.max_queue:
            raise QueueFull(f"{self.depth} texts queued; the queue takes {self.max_queue}")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Request(key, items, future))
        self._set_depth(self.depth + len(items))
        # wait_for cancels the future on timeout, and a cancelled caller cancels it too: the worker
        # then skips the request, or ignores its results if its batch is already running
        return await asyncio.wait_for(future, timeout)

    def _set_depth(self, depth: int) -> None:
        self.depth = depth
        if self.observer:
            self.observer.queue_depth(depth)

    def _take(self, req: _Request) -> bool:
        """Accounts for a request leaving the queue; False if nobody waits for it any more."""
        self._set_depth(self.depth - len(req.items))
        if req.future.done():
            return False
        if self.observer:
            self.observer.queue_wait(time.perf_counter() - req.enqueued)
        return True

    async def _collect(self) -> list[_Request]:
        assert self._queue is not None
        batch: list[_Request] = []
        n_items = 0
        while not batch:  # the first live request, however long it takes
            req = await self._queue.get()
            if self._take(req):
                batch.append(req)
                n_items = len(req.items)
        deadline = time.perf_counter() + self.max_wait_s
        while n_items < self.max_batch_size:
            try:
                if self._queue.empty():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    req = await asyncio.wait_for(self._queue.get(), left)
                else:
                    req = self._queue.get_nowait()
            except TimeoutError:
                break
            if self._take(req):
                batch.append(req)
                n_items += len(req.items)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[Hashable, list[_Request]] = {}
            for req in batch:
                groups.setdefault(req.key, []).append(req)
            for key, reqs in groups.items():
                items = [x for r in reqs for x in r.items]
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self.executor, self.run_batch, key, items)
                except asyncio.CancelledError:
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(RuntimeError("the service is shutting down"))
                    raise
                except Exception as e:  # handed to the requests of this batch
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(e)
                    continue
                if self.observer:
                    self.observer.batch_ran(len(items), time.perf_counter() - started)
                start = 0
                for r in reqs:
                    if not r.future.done():
                        r.future.set_result(list(results[start : start + len(r.items)]))
                    start += len(r.items)
