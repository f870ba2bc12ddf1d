"""The micro-batcher, directly (the test client would serialise requests)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from xlgen.service.batcher import MicroBatcher, QueueFull


class Recorder:
    """A run_batch that records its batches, optionally slow or failing."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[tuple[object, list[str]]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.running = threading.Event()

    def __call__(self, key: object, items: list[str], should_stop: object = None) -> list[str]:
        self.running.set()
        self.batches.append((key, list(items)))
        time.sleep(self.delay)
        if self.fail_on in items:
            raise RuntimeError("model broke")
        return [f"{key}:{x}" for x in items]


class Observer:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.depths: list[int] = []
        self.waits: list[float] = []
        self.running: list[bool] = []
        self.cancelled = 0

    def batch_ran(self, size: int, seconds: float) -> None:
        self.sizes.append(size)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def queue_depth(self, depth: int) -> None:
        self.depths.append(depth)

    def batch_running(self, running: bool) -> None:
        self.running.append(running)

    def chunks_cancelled(self, n: int) -> None:
        self.cancelled += n


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_concurrent_requests_are_merged_and_answered_in_order() -> None:
    async def main() -> None:
        rec, obs = Recorder(), Observer()
        b = MicroBatcher(rec, max_batch_size=8, max_wait_ms=50, max_queue=100, observer=obs)
        b.start()
        try:
            results = await asyncio.gather(*(b.submit("k", [f"t{i}a", f"t{i}b"]) for i in range(4)))
        finally:
            await b.stop()
        assert results == [[f"k:t{i}a", f"k:t{i}b"] for i in range(4)]
        assert len(rec.batches) == 1 and len(rec.batches[0][1]) == 8  # four requests, one model call
        assert obs.sizes == [8] and len(obs.waits) == 4 and obs.depths[-1] == 0

    run(main())


def test_batch_size_caps_a_batch_and_keys_never_mix() -> None:
    async def main() -> None:
        rec = Recorder()
        b = MicroBatcher(rec, max_batch_size=3, max_wait_ms=30, max_queue=100)
        b.start()
        try:
            tasks = [b.submit("a" if i % 2 else "b", [str(i)]) for i in range(8)]
            results = await asyncio.gather(*tasks)
        finally:
            await b.stop()
        assert [r[0] for r in results] == [f"{'a' if i % 2 else 'b'}:{i}" for i in range(8)]
        assert sum(len(items) for _, items in rec.batches) == 8
        for key, items in rec.batches:
            assert all((int(x) % 2 == 1) == (key == "a") for x in items)
        # at most max_batch_size items were collected per round (a round may split by key)
        assert all(len(items) <= 3 for _, items in rec.batches)

    run(main())


def test_no_merging_with_batch_size_one() -> None:
    async def main() -> None:
        rec = Recorder()
        b = MicroBatcher(rec, max_batch_size=1, max_wait_ms=0, max_queue=100)
        b.start()
        try:
            await asyncio.gather(*(b.submit("k", [str(i)]) for i in range(5)))
        finally:
            await b.stop()
        assert [len(items) for _, items in rec.batches] == [1] * 5

    run(main())


def test_full_queue_refuses_at_once() -> None:
    async def main() -> None:
        rec = Recorder(delay=0.3)
        executor = ThreadPoolExecutor(1)
        b = MicroBatcher(rec, max_batch_size=2, max_wait_ms=0, max_queue=4, executor=executor)
        b.start()
        try:
            first = asyncio.create_task(b.submit("k", ["a", "b"]))  # taken by the worker, running
            await asyncio.to_thread(rec.running.wait, 5)
            queued = asyncio.create_task(b.submit("k", ["c", "d", "e"]))  # waits: 3 of 4 places
            await asyncio.sleep(0.01)
            assert b.depth == 3
            with pytest.raises(QueueFull):
                await b.submit("k", ["f", "g"])
            assert await first == ["k:a", "k:b"]
            assert await queued == ["k:c", "k:d", "k:e"]
        finally:
            await b.stop()
            executor.shutdown()

    run(main())


def test_cancelled_request_leaves_its_batch_unharmed() -> None:
    async def main() -> None:
        rec = Recorder(delay=0.2)
        b = MicroBatcher(rec, max_batch_size=8, max_wait_ms=30, max_queue=100)
        b.start()
        try:
            keep = asyncio.create_task(b.submit("k", ["keep"]))
            drop = asyncio.create_task(b.submit("k", ["drop"]))
            await asyncio.to_thread(rec.running.wait, 5)  # both are in the running batch
            drop.cancel()
            assert await keep == ["k:keep"]
            with pytest.raises(asyncio.CancelledError):
                await drop
            # a request cancelled while still queued is skipped, the next one is served
            rec.running.clear()
            blocker = asyncio.create_task(b.submit("k", ["blocker"]))
            await asyncio.to_thread(rec.running.wait, 5)
            queued = asyncio.create_task(b.submit("k", ["gone"]))
            await asyncio.sleep(0.01)
            queued.cancel()
            after = asyncio.create_task(b.submit("k", ["after"]))
            assert await blocker == ["k:blocker"]
            assert await after == ["k:after"]
            assert all("gone" not in items for _, items in rec.batches)
            assert b.depth == 0
        finally:
            await b.stop()

    run(main())


def test_timeout_and_errors_reach_only_their_requests() -> None:
    async def main() -> None:
        rec = Recorder(delay=0.3, fail_on="bad")
        b = MicroBatcher(rec, max_batch_size=1, max_wait_ms=0, max_queue=100)
        b.start()
        try:
            with pytest.raises(TimeoutError):
                await b.submit("k", ["slow"], timeout=0.05)
            with pytest.raises(RuntimeError, match="model broke"):
                await b.submit("k", ["bad"])
            assert await b.submit("k", ["fine"]) == ["k:fine"]  # the worker survived both
        finally:
            await b.stop()
        with pytest.raises(RuntimeError, match="not running"):
            await b.submit("k", ["x"])

    run(main())


def test_cut_chunks_by_items_and_work() -> None:
    from xlgen.service.batcher import cut_chunks

    assert cut_chunks([1, 1, 1, 1, 1], max_items=2, max_work=100) == [(0, 2), (2, 4), (4, 5)]
    assert cut_chunks([3, 3, 3, 10, 1], max_items=10, max_work=6) == [(0, 2), (2, 3), (3, 4), (4, 5)]  # 10 alone
    assert cut_chunks([], max_items=2, max_work=1) == []


def test_a_light_request_waits_for_one_chunk_of_a_heavy_one() -> None:
    async def main() -> None:
        rec, obs = Recorder(delay=0.05), Observer()
        b = MicroBatcher(rec, max_batch_size=4, max_wait_ms=0, max_queue=100, observer=obs, max_batch_work=8)
        b.start()
        try:
            heavy_items = [f"h{i}" for i in range(40)]
            heavy = asyncio.create_task(b.submit("beam64", heavy_items, work=[4] * 40))  # 20 chunks of 2 items
            await asyncio.to_thread(rec.running.wait, 5)
            started = len(rec.batches)  # the last of them runs now (or has just finished)
            light = await b.submit("greedy", ["l"], work=[1])
            assert light == ["greedy:l"]
            at = next(i for i, (_, items) in enumerate(rec.batches) if items == ["l"])
            assert started <= at <= started + 1  # right behind the running chunk, or the one planned as it came
            assert await heavy == [f"beam64:{x}" for x in heavy_items]  # in order, every chunk once
            assert [len(items) for key, items in rec.batches if key == "beam64"] == [2] * 20
            assert obs.running[-1] is False and obs.depths[-1] == 0 and obs.cancelled == 0
        finally:
            await b.stop()

    run(main())


def test_a_timed_out_request_stops_its_work() -> None:
    class Stoppable(Recorder):
        """Checks should_stop every 10 ms while it works, as the decoding loop does between batches."""

        stopped = 0

        def __call__(self, key: object, items: list[str], should_stop=None) -> list[str]:  # type: ignore[no-untyped-def]
            self.running.set()
            self.batches.append((key, list(items)))
            end = time.perf_counter() + self.delay
            while time.perf_counter() < end:
                if should_stop is not None and should_stop():
                    self.stopped += 1
                    raise RuntimeError("stopped")
                time.sleep(0.01)
            return [f"{key}:{x}" for x in items]

    async def main() -> None:
        rec, obs = Stoppable(delay=0.1), Observer()
        b = MicroBatcher(rec, max_batch_size=2, max_wait_ms=0, max_queue=100, observer=obs)
        b.start()
        try:
            with pytest.raises(TimeoutError):
                await b.submit("k", [str(i) for i in range(40)], timeout=0.25)  # 20 chunks of 0.1 s each
            ran = len(rec.batches)
            assert ran < 20 and b.depth == 0  # its queue places are free at once
            while obs.running[-1]:  # the chunk running at the timeout stops at its next check
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert len(rec.batches) == ran  # nothing more ran for it
            assert rec.stopped <= 1 and obs.cancelled == 20 - ran + rec.stopped  # never run, or stopped midway
            assert obs.running[-1] is False

            # a chunk that runs when its request times out stops at its next check
            rec.delay, rec.stopped = 5.0, 0
            started = time.perf_counter()
            with pytest.raises(TimeoutError):
                await b.submit("k", ["long"], timeout=0.1)
            while obs.running[-1]:
                await asyncio.sleep(0.01)
            assert rec.stopped == 1 and time.perf_counter() - started < rec.delay
            rec.delay = 0.0
            assert await b.submit("k", ["next"]) == ["k:next"]
        finally:
            await b.stop()

    run(main())
