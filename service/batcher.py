"""An asyncio micro-batcher: concurrent requests merged into model calls, run off the event loop,
large requests cut into chunks that take turns with the others.

Each request submits its items (texts) under a key (its decoding settings), optionally with the
work of each item. It is cut into chunks of consecutive items, each at most ``max_batch_size``
items and ``max_batch_work`` work (a single heavier item is a chunk of its own). One worker task
runs one batch at a time in an executor thread: the next chunk of the request at the head of the
queue, plus the next chunks of other requests under the same key while they fit. A request whose
chunk ran goes to the back of the queue when it has more, so a light request that arrives while a
heavy one runs waits for about one chunk, not for the whole heavy request.

The queue is bounded (in items not yet taken into a batch): a request that does not fit gets
:class:`QueueFull` at once. A request that is cancelled or times out gives its untaken items back
at once and its remaining chunks are dropped; the batch that runs is told to stop (``should_stop``)
once nobody waits for any of its items, and the other requests of a batch are answered as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

RunBatch = Callable[[Hashable, list[Any], Callable[[], bool]], Sequence[Any]]
"""``run_batch(key, items, should_stop) -> results``, one result per item; ``should_stop()`` turns
True once no request waits for any of the items, and the call may then stop early by raising."""


class QueueFull(Exception):
    """The batcher's queue cannot take the request now."""


class BatchObserver(Protocol):
    """What the batcher reports (see :class:`xlgen.service.metrics.Metrics`)."""

    def batch_ran(self, size: int, seconds: float) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...

    def queue_depth(self, depth: int) -> None: ...

    def batch_running(self, running: bool) -> None: ...

    def chunks_cancelled(self, n: int) -> None: ...


def cut_chunks(work: Sequence[float], max_items: int, max_work: float) -> list[tuple[int, int]]:
    """``(start, end)`` spans of consecutive items, each at most ``max_items`` items and at most
    ``max_work`` work (an item heavier than that alone)."""
    spans: list[tuple[int, int]] = []
    start, total = 0, 0.0
    for i, w in enumerate(work):
        if i > start and (i - start == max_items or total + w > max_work):
            spans.append((start, i))
            start, total = i, 0.0
        total += w
    if start < len(work):
        spans.append((start, len(work)))
    return spans


@dataclass(eq=False)
class _Request:
    key: Hashable
    items: Sequence[Any]
    work: Sequence[float]
    spans: list[tuple[int, int]]
    future: asyncio.Future = field(repr=False)
    results: list[Any] = field(default_factory=list, repr=False)
    taken: int = 0  # spans taken into batches so far
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def next_span(self) -> tuple[int, int]:
        return self.spans[self.taken]

    @property
    def untaken_items(self) -> int:
        return len(self.items) - (self.spans[self.taken][0] if self.taken < len(self.spans) else len(self.items))

    def span_work(self, span: tuple[int, int]) -> float:
        return float(sum(self.work[span[0] : span[1]]))


class MicroBatcher:
    """Merges concurrent requests into batches and interleaves the chunks of large ones.

    Args:
        run_batch: See :data:`RunBatch`; called in ``executor``.
        max_batch_size: Items per batch.
        max_wait_ms: How long to wait for more requests once a new one is there; 0 takes only
            what is already queued.
        max_queue: Items waiting at most.
        executor: Where ``run_batch`` runs (the event loop's default executor if None).
        observer: Receives batch sizes, queue waits and depths, whether a batch runs, and how many
            chunks were dropped or stopped because nobody waited for them.
        max_batch_work: Work per batch (the unit is the caller's; see :meth:`submit`).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        max_batch_work: float = float("inf"),
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0 or max_batch_work <= 0:
            raise ValueError("max_batch_size, max_queue and max_batch_work must be positive, max_wait_ms not negative")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_batch_work = max_batch_work
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.executor = executor
        self.observer = observer
        self.depth = 0  # items queued, not yet taken into a batch
        self._waiting: deque[_Request] = deque()  # requests with chunks left, none of them running
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        """Starts the worker task on the running loop."""
        self._arrived = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stops the worker; requests still queued fail with :class:`RuntimeError`."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._waiting:
            req = self._waiting.popleft()
            req.taken = len(req.spans)  # nothing left to give back: the queue is emptied here
            if not req.future.done():
                req.future.set_exception(RuntimeError("the service is shutting down"))
        self._set_depth(0)

    async def submit(self, key: Hashable, items: Sequence[Any], timeout: float | None = None,
                     work: Sequence[float] | None = None) -> list[Any]:
        """Queues ``items`` and waits for their results.

        Args:
            key: Items under one key may share a batch; others never do.
            items: The items.
            timeout: Seconds to wait for the results.
            work: The cost of each item (1 each if None), in the unit of ``max_batch_work``.

        Raises:
            QueueFull: If the queue holds too many items to take these.
            TimeoutError: If the results take longer than ``timeout`` seconds.
            RuntimeError: If the batcher is not running.
        """
        if self._arrived is None or self._worker is None or self._worker.done():
            raise RuntimeError("the micro-batcher is not running")
        if self.depth + len(items) > self.max_queue:
            raise QueueFull(f"{self.depth} texts queued; the queue takes {self.max_queue}")
        work = [1.0] * len(items) if work is None else list(work)
        if len(work) != len(items):
            raise ValueError("one work value per item")
        if not items:
            return []
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        req = _Request(key, items, work, cut_chunks(work, self.max_batch_size, self.max_batch_work), future, [None] * len(items))
        # a request that ends (answered, failed, timed out, cancelled) gives its untaken items
        # back at once, so that they neither hold queue places nor get run for nobody
        future.add_done_callback(lambda _: self._forget(req))
        self._waiting.append(req)
        self._set_depth(self.depth + len(items))
        self._arrived.set()
        # wait_for cancels the future on timeout, and a cancelled caller cancels it too
        return await asyncio.wait_for(future, timeout)

    def _set_depth(self, depth: int) -> None:
        self.depth = depth
        if self.observer:
            self.observer.queue_depth(depth)

    def _forget(self, req: _Request) -> None:
        left = req.untaken_items
        if req in self._waiting:
            self._waiting.remove(req)
        if left:
            self._set_depth(self.depth - left)
            if req.future.cancelled() and self.observer:
                self.observer.chunks_cancelled(len(req.spans) - req.taken)
            req.taken = len(req.spans)

    def _plan(self) -> list[_Request]:
        """The requests whose next chunk makes the next batch: the head's, then others' under its
        key while they fit (each at most once)."""
        head = self._waiting[0]
        batch, n_items, work = [head], head.next_span[1] - head.next_span[0], head.span_work(head.next_span)
        for req in list(self._waiting)[1:]:
            if req.key != head.key:
                continue
            span = req.next_span
            size, w = span[1] - span[0], req.span_work(span)
            if n_items + size <= self.max_batch_size and work + w <= self.max_batch_work:
                batch.append(req)
                n_items, work = n_items + size, work + w
        return batch

    def _purge(self) -> None:
        """Drops requests that ended from the queue (their done callback settles the accounting)."""
        while self._waiting and self._waiting[0].future.done():
            self._waiting.popleft()
        if any(r.future.done() for r in self._waiting):
            self._waiting = deque(r for r in self._waiting if not r.future.done())

    async def _next_batch(self) -> list[_Request]:
        """Waits for a request; a new one at the head waits up to ``max_wait_ms`` for company."""
        assert self._arrived is not None
        self._purge()
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
            self._purge()
        if self._waiting[0].taken == 0:
            deadline = time.perf_counter() + self.max_wait_s
            while sum(r.next_span[1] - r.next_span[0] for r in self._plan()) < self.max_batch_size:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
                self._purge()
                if not self._waiting:  # every request went away while it waited
                    return []
        return self._plan()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            reqs = await self._next_batch()
            if not reqs:
                continue
            spans = []
            now = time.perf_counter()
            for req in reqs:
                self._waiting.remove(req)
                span = req.next_span
                spans.append(span)
                if req.taken == 0 and self.observer:
                    self.observer.queue_wait(now - req.enqueued)
                req.taken += 1
                self._set_depth(self.depth - (span[1] - span[0]))
            items = [x for req, (a, b) in zip(reqs, spans, strict=True) for x in req.items[a:b]]
            key = reqs[0].key

            def nobody_waits(reqs: list[_Request] = reqs) -> bool:
                return all(r.future.done() for r in reqs)

            started = time.perf_counter()
            if self.observer:
                self.observer.batch_running(True)
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, key, items, nobody_waits)
            except asyncio.CancelledError:
                for r in reqs:
                    r.taken = len(r.spans)
                    if not r.future.done():
                        r.future.set_exception(RuntimeError("the service is shutting down"))
                raise
            except Exception as e:  # handed to the requests of this batch; a stopped batch has none left
                if nobody_waits():
                    if self.observer:
                        self.observer.chunks_cancelled(len(reqs))
                else:
                    for r in reqs:
                        if not r.future.done():
                            r.future.set_exception(e)
                continue
            finally:
                if self.observer:
                    self.observer.batch_running(False)
            if self.observer:
                self.observer.batch_ran(len(items), time.perf_counter() - started)
            start = 0
            for req, (a, b) in zip(reqs, spans, strict=True):
                req.results[a:b] = results[start : start + b - a]
                start += b - a
                if req.future.done():
                    continue
                if req.taken == len(req.spans):
                    req.future.set_result(list(req.results))
                else:
                    self._waiting.append(req)  # its next chunk waits behind the requests that came meanwhile
                    self._arrived.set()  # type: ignore[union-attr]
