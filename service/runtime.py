"""Everything one app instance holds (settings, storage, served model, micro-batcher, retraining
jobs, metrics) and its start and stop; the handlers reach it through dependency injection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from litestar.exceptions import HTTPException, ServiceUnavailableException

from xlgen.active.acquisition import get_strategy
from xlgen.active.selection import ScoreCache, Selection, SelectionConfig, select_batch
from xlgen.backends import Cancelled
from xlgen.data import Document
from xlgen.decoding import DecodingConfig
from xlgen.service.auth import KEY_FILE, load_or_make_key
from xlgen.service.batcher import MicroBatcher, QueueFull, cut_chunks
from xlgen.service.errors import bad_request
from xlgen.service.inference import (
    ModelHolder,
    ServedModel,
    Tagged,
    apply_labels,
    ensure_export,
    load_served_model,
    run_tag_batch,
    scan_work,
    text_work,
)
from xlgen.service.jobs import RetrainManager
from xlgen.service.metrics import Metrics
from xlgen.service.settings import Settings
from xlgen.service.storage import Storage

log = logging.getLogger("xlgen.service")

SERVING_KEY = "serving_model"
SCORE_CACHE_ENTRIES = 32
"""Decoded pool samples kept per process (the selection cache has no bound of its own)."""


LIGHT_STRATEGIES = ("beam", "greedy")
"""Decodings the light lane runs: deterministic, so that they read no random generator and keep dropout off."""


class LaneObserver:
    """What the light lane's micro-batcher reports: batch sizes and times, queue waits and dropped chunks go to
    the service's metrics; its queue depth and running state are left out (those gauges are the heavy lane's)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def batch_ran(self, size: int, seconds: float) -> None:
        self.metrics.batch_ran(size, seconds)

    def queue_wait(self, seconds: float) -> None:
        self.metrics.queue_wait(seconds)

    def queue_depth(self, depth: int) -> None:
        pass

    def batch_running(self, running: bool) -> None:
        pass

    def chunks_cancelled(self, n: int) -> None:
        self.metrics.chunks_cancelled(n)


@dataclass(frozen=True)
class ScanKey:
    """The micro-batcher's key of next-batch scoring: pieces of pool scans under one selection config."""

    cfg: SelectionConfig


@dataclass(frozen=True, eq=False)
class ScanPiece:
    """Pool documents scored in one model call, with what their scoring reads."""

    served: ServedModel
    docs: tuple[Document, ...]
    labelled: tuple[Document, ...]


class Runtime:
    """The state of one app instance.

    Args:
        settings: The settings.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.holder = ModelHolder()
        # one thread runs the heavy work (chunks of large tag and predict requests, sampling, next-batch
        # scoring) and a second one light deterministic tag requests (settings.light_work), so that those never
        # wait behind a heavy chunk; a call with dropout on holds the model alone (self._exclusive)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="xlgen-model")
        self.light_executor = ThreadPoolExecutor(1, thread_name_prefix="xlgen-light")
        self.batcher = self._lane(self._run_batch, self.executor, self.metrics)
        self.light_batcher = self._lane(self._run_light_batch, self.light_executor, LaneObserver(self.metrics))
        self._exclusive = threading.Lock()
        self._storage: Storage | None = None
        self._jobs: RetrainManager | None = None
        self._tasks: list[asyncio.Task] = []
        self._score_cache = ScoreCache()
        self._api_key = settings.api_key
        # one next-batch at a time per annotator: a loop of calls from one token cannot stack scorings
        self._annotator_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lane(self, run: Callable[[Hashable, list[Any], Callable[[], bool]], list[Any]], executor: ThreadPoolExecutor,
              observer: Any) -> MicroBatcher:
        s = self.settings
        return MicroBatcher(run, max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms, max_queue=s.max_queue, executor=executor,
                            observer=observer, max_batch_work=s.chunk_work)

    @property
    def api_key(self) -> str:
        """The API key: the configured one, or the one made and kept in the work directory at start."""
        if not self._api_key:
            raise ServiceUnavailableException("the service is starting")
        return self._api_key

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise ServiceUnavailableException("storage is not open yet")
        return self._storage

    @property
    def jobs(self) -> RetrainManager:
        if self._jobs is None:
            raise ServiceUnavailableException("the service is starting")
        return self._jobs

    # ------------------------------------------------------------------------------- lifecycle

    async def startup(self) -> None:
        """Opens storage, starts the batcher and, in the background, loads the model."""
        s = self.settings
        Path(s.work_dir).mkdir(parents=True, exist_ok=True)
        if not self._api_key:
            self._api_key = await asyncio.to_thread(load_or_make_key, Path(s.work_dir) / KEY_FILE)
        self._storage = await asyncio.to_thread(Storage, s.database_url, s.table_prefix)
        self._jobs = RetrainManager(self._storage, s.work_dir, s.train_data, s.retrain_args,
                                    serving_f1=lambda: self.holder.current.dev_micro_f1 if self.holder.current else -1.0,
                                    install=self.install,
                                    serving_path=lambda: self.holder.current.path if self.holder.current else None,
                                    fine_tune_encoder=s.retrain_encoder)
        await asyncio.to_thread(self._jobs.recover)  # jobs whose server died (a kill -9, a crash) end here
        self.batcher.start()
        self.light_batcher.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._load_initial(), name="load-model"))
        if s.model_poll_s > 0:
            self._tasks.append(loop.create_task(self._watch_model(), name="watch-model"))

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.batcher.stop()
        await self.light_batcher.stop()
        if self._jobs is not None:
            await self._jobs.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._storage is not None:
            self._storage.close()

    async def _load(self, path: str) -> ServedModel:
        """Loads a model directory, with the labels added by name since (kept in the database) applied."""
        s = self.settings
        served = await asyncio.get_running_loop().run_in_executor(
            None, lambda: load_served_model(path, s.device, s.threads, s.bf16, s.backend))
        await asyncio.to_thread(apply_labels, served, self.storage)
        return served

    async def _load_initial(self) -> None:
        """Serves what the database says was swapped in last for this base model, else the base model."""
        s = self.settings
        try:
            if not s.model:
                raise ValueError("no model given: set XLGEN_MODEL (xlgen serve --model DIR)")
            record = await asyncio.to_thread(self.storage.get_meta, SERVING_KEY)
            base = str(Path(s.model).resolve())
            path = base
            if record and record.get("base") == base and (Path(record["path"]) / "xlgen.json").is_file():
                path = record["path"]
            served = await self._load(path)
            self._serve(served)
            if not record or record.get("base") != base:
                await asyncio.to_thread(self.storage.set_meta, SERVING_KEY, {"base": base, "path": served.path, "version": served.version})
        except Exception as e:
            self.holder.error = f"{type(e).__name__}: {e}"
            log.exception("model load failed", extra={"fields": {"model": s.model}})

    def _serve(self, served: ServedModel) -> None:
        self.holder.swap(served)
        self.metrics.serving(served.version)
        if self._score_cache is not None:
            self._score_cache.clear()
        log.info("serving model", extra={"fields": {"version": served.version, "path": served.path, "device": served.device,
                                                     "dtype": served.dtype, "backend": served.backend,
                                                     "labels": len(served.model.label_space)}})

    async def install(self, model_dir: str) -> str:
        """Loads ``model_dir`` and swaps it in (requests in flight finish on the old model); the
        database records it so that other workers and replicas follow. Returns its version."""
        current = self.holder.current
        if current is not None and current.model.backend is not None and self.settings.backend != "torch":
            for name in current.model.backend.names:
                await asyncio.get_running_loop().run_in_executor(None, ensure_export, model_dir, name)
        served = await self._load(model_dir)
        self._serve(served)
        self.metrics.model_swaps.inc()
        await asyncio.to_thread(self.storage.set_meta, SERVING_KEY,
                                {"base": str(Path(self.settings.model).resolve()), "path": served.path, "version": served.version})
        return served.version

    async def _watch_model(self) -> None:
        """Follows swaps made by other workers or replicas (through the database)."""
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            current = self.holder.current
            if current is None:
                continue
            try:
                record = await asyncio.to_thread(self.storage.get_meta, SERVING_KEY)
                if record and record.get("version") != current.version and (Path(record["path"]) / "xlgen.json").is_file():
                    self._serve(await self._load(record["path"]))
            except Exception:
                log.exception("model watch failed")

    # --------------------------------------------------------------------------------- model use

    def require_model(self) -> ServedModel:
        """The served model, or 503 while it loads (or failed to)."""
        served = self.holder.current
        if served is None:
            detail = f"model failed to load: {self.holder.error}" if self.holder.error else "the model is loading"
            raise ServiceUnavailableException(detail=detail, headers={"Retry-After": "5"})
        return served

    async def tag(self, texts: Sequence[str], decoding: DecodingConfig, field: str = "texts", check_budget: bool = True) -> list[Tagged]:
        """Predictions through the micro-batcher: 400 naming ``field`` above the work budget (unless not
        ``check_budget``: the service's own calls), 503 when its queue is full, 504 on timeout (the request's
        work not yet done is dropped, the running chunk stopped)."""
        s = self.settings
        work = await asyncio.to_thread(text_work, self.require_model().model, texts, decoding)
        if check_budget and sum(work) > s.max_request_work:
            self.metrics.rejected.labels(reason="work").inc()
            raise bad_request(field, f"the request's work is {sum(work):,} token-sequences (each text's input tokens, at most the "
                                     f"model's maximum input length, plus up to {decoding.max_new_tokens} decoded, times "
                                     f"{decoding.num_return} sequences per text); at most {s.max_request_work:,} "
                                     "(XLGEN_MAX_REQUEST_WORK): send fewer or shorter texts, or fewer beams or samples")
        light = 0 < sum(work) <= s.light_work and decoding.strategy in LIGHT_STRATEGIES
        return await self._submit(decoding, list(texts), work, self.light_batcher if light else self.batcher)

    async def _submit(self, key: Hashable, items: list[Any], work: Sequence[float], batcher: MicroBatcher | None = None) -> list[Any]:
        """``items`` through a micro-batcher (the heavy one by default) under ``key``: 503 when its queue is full,
        504 on timeout."""
        try:
            return await (batcher or self.batcher).submit(key, items, timeout=self.settings.request_timeout_s, work=work)
        except QueueFull as e:
            self.metrics.rejected.labels(reason="queue_full").inc()
            raise ServiceUnavailableException(detail=f"too busy: {e}", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            self.metrics.rejected.labels(reason="timeout").inc()
            raise HTTPException(status_code=504, detail=f"no answer within {self.settings.request_timeout_s} s") from None

    def _run_batch(self, key: Hashable, items: list[Any], should_stop: Callable[[], bool]) -> list[Any]:
        """One model call of the micro-batcher, on the model thread: tag texts, or score pool pieces."""
        if isinstance(key, ScanKey):
            out = []
            # MC dropout turns dropout on in the whole model: nothing else may decode with it meanwhile
            dropout = get_strategy(key.cfg.strategy).needs == "passes" or key.cfg.ensemble.mc_dropout > 0
            exclusive = self._exclusive if dropout else contextlib.nullcontext()
            for piece in items:
                if should_stop():
                    raise Cancelled("next-batch scoring stopped: nobody waits for it")
                with exclusive:
                    out.append(self._scan(piece, key.cfg))
            return out
        return run_tag_batch(self.holder, key, items, should_stop)  # type: ignore[arg-type]

    def _run_light_batch(self, key: Hashable, items: list[Any], should_stop: Callable[[], bool]) -> list[Any]:
        """One model call of the light lane, on its own thread (never while dropout is on elsewhere)."""
        with self._exclusive:
            return run_tag_batch(self.holder, key, items, should_stop)  # type: ignore[arg-type]

    def _scan(self, piece: ScanPiece, cfg: SelectionConfig) -> Selection:
        if len(self._score_cache.decoded) > SCORE_CACHE_ENTRIES:
            self._score_cache.clear()
        return select_batch(piece.served.model, piece.docs, replace(cfg, batch_size=min(cfg.batch_size, len(piece.docs))),
                            self._score_cache, piece.labelled)

    async def select(self, served: ServedModel, docs: Sequence[Document], cfg: SelectionConfig,
                     labelled: Sequence[Document] = ()) -> Selection:
        """The acquisition library's batch selection (score, rank, diversity, noise cut) over pool documents,
        in pieces that take turns with tag requests in the micro-batcher.

        The documents (a random sample of ``cfg.pool_sample`` first, when given) are cut into pieces of about
        ``XLGEN_CHUNK_WORK`` of decoding each (:func:`xlgen.service.inference.scan_work`); each piece runs
        :func:`select_batch` on the model thread as one chunk, and the pieces' picks are ranked by their
        scores. For a strategy that scores each document on its own this is the selection over all the
        documents; diversity, Core-Set, DAL, ALPS and the noise cut choose within each piece. Scores are
        cached by the served model's version.
        """
        docs = list(docs)
        if cfg.pool_sample is not None and cfg.pool_sample < len(docs):
            keep = np.sort(np.random.default_rng(cfg.seed).choice(len(docs), cfg.pool_sample, replace=False))
            docs = [docs[i] for i in keep]
        cfg = replace(cfg, pool_sample=None)
        if not docs:
            return Selection(indices=[], ids=[], scores=[], suggestions=[], seconds=0.0, n_scored=0, cached=False)
        work = await asyncio.to_thread(scan_work, served.model, [d.text for d in docs], cfg)
        s = self.settings
        spans = cut_chunks(work, len(docs), s.chunk_work)
        pieces = [ScanPiece(served, tuple(docs[a:b]), tuple(labelled)) for a, b in spans]
        picked: list[Selection] = await self._submit(ScanKey(cfg), pieces, [sum(work[a:b]) for a, b in spans])
        if len(picked) == 1:
            return picked[0]
        # best first across the pieces; a NaN score (an undefined acquisition value) ranks last
        ranked = sorted(((score, i, k) for i, sel in enumerate(picked) for k, score in enumerate(sel.scores)),
                        key=lambda x: (-x[0] if x[0] == x[0] else np.inf, x[1], x[2]))[: cfg.batch_size]
        offsets = np.cumsum([0, *(b - a for a, b in spans)])
        return Selection(indices=[int(offsets[i]) + picked[i].indices[k] for _, i, k in ranked],
                         ids=[picked[i].ids[k] for _, i, k in ranked], scores=[picked[i].scores[k] for _, i, k in ranked],
                         suggestions=[picked[i].suggestions[k] for _, i, k in ranked], seconds=sum(x.seconds for x in picked),
                         n_scored=sum(x.n_scored for x in picked), cached=all(x.cached for x in picked))

    def annotator_lock(self, annotator: str) -> asyncio.Lock:
        """The lock that lets one next-batch call of ``annotator`` run at a time in this process."""
        lock = self._annotator_locks.get(annotator)
        if lock is None:
            lock = self._annotator_locks[annotator] = asyncio.Lock()
        return lock
