"""Service settings, read from the environment in this one module.

Every setting is an ``XLGEN_*`` variable; ``xlgen serve`` turns its options into these variables so
that ``uvicorn --factory service.app:create_app`` (and every uvicorn worker) sees the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PREFIX = "XLGEN_"
BACKENDS = ("auto", "torch", "onnxruntime", "ctranslate2")  # xlgen.backends.BACKENDS, without importing torch here


def _env_field(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Settings:
    """How the service runs.

    Attributes:
        model: Model directory served at start (``XLGEN_MODEL``).
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        threads: torch CPU threads (0 leaves torch's default).
        bf16: Run in bfloat16 on a CUDA device that supports it.
        backend: Inference backend: ``auto`` (the fastest valid export in the model directory,
            else torch), ``torch``, ``onnxruntime`` or ``ctranslate2`` (see ``xlgen export``).
        db_url: SQLAlchemy URL; a SQLite file under ``work_dir`` when empty.
        table_prefix: Prefix of every table name, so that several deployments (or test runs) share
            one database.
        work_dir: Folder for the SQLite file and the retraining jobs.
        train_data: Base training dataset folder (train/dev[/test] splits) that retraining adds the
            stored annotations to; retraining is off when empty.
        retrain_args: Extra ``python -m training.train`` options for every retraining job.
        api_key: Key required in the ``X-API-Key`` header by every write endpoint; none when empty.
        max_texts: Texts per tag request.
        max_pool_docs: Documents per pool request.
        max_chars: Characters per text.
        max_body_bytes: Request body size.
        max_batch_size: Texts merged into one model call by the micro-batcher.
        max_wait_ms: How long the micro-batcher waits for more requests before running a batch.
        max_queue: Texts waiting in the micro-batcher; further requests get 503.
        request_timeout_s: A tag request waiting longer gets 504.
        claim_ttl_s: How long a next-batch claim keeps a document from other annotators.
        pool_scan: Pool documents scored per next-batch call (a random sample when the pool is larger).
        model_poll_s: How often a worker checks the database for a model swapped in by another
            worker or replica (0 turns it off).
        log_level: Logging level.
    """

    model: str = _env_field("", "model directory served at start")
    device: str = _env_field("auto", "auto, cpu, cuda or cuda:N")
    threads: int = _env_field(0, "torch CPU threads (0: torch's default)")
    bf16: bool = _env_field(True, "bfloat16 on a CUDA device that supports it")
    backend: str = _env_field("auto", "inference backend: auto, torch, onnxruntime or ctranslate2")
    db_url: str = _env_field("", "SQLAlchemy URL (default: sqlite file in the work dir)")
    table_prefix: str = _env_field("xlgen_", "prefix of every table name")
    work_dir: str = _env_field("xlgen-service", "folder for the SQLite file and retraining jobs")
    train_data: str = _env_field("", "base training dataset folder for retraining")
    retrain_args: str = _env_field("", "extra training options for every retraining job")
    api_key: str = _env_field("", "API key for write endpoints (X-API-Key header)")
    max_texts: int = _env_field(64, "texts per tag request")
    max_pool_docs: int = _env_field(1000, "documents per pool request")
    max_chars: int = _env_field(10_000, "characters per text")
    max_body_bytes: int = _env_field(2_000_000, "request body size in bytes")
    max_batch_size: int = _env_field(32, "texts per model call (micro-batcher)")
    max_wait_ms: float = _env_field(5.0, "micro-batcher wait for more requests, in ms")
    max_queue: int = _env_field(1024, "texts waiting in the micro-batcher before 503")
    request_timeout_s: float = _env_field(30.0, "tag request timeout in seconds (504)")
    claim_ttl_s: float = _env_field(1800.0, "next-batch claim lifetime in seconds")
    pool_scan: int = _env_field(512, "pool documents scored per next-batch call")
    model_poll_s: float = _env_field(5.0, "seconds between checks for a model swapped in elsewhere")
    log_level: str = _env_field("INFO", "logging level")

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_pool_docs", "max_chars", "max_body_bytes", "max_batch_size", "max_queue", "pool_scan"):
            if getattr(self, name) < 1:
                raise ValueError(f"{PREFIX}{name.upper()} must be positive")
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0 or self.claim_ttl_s <= 0 or self.threads < 0:
            raise ValueError("max_wait_ms and threads must not be negative; timeouts and claim TTL must be positive")
        if self.backend not in BACKENDS:
            raise ValueError(f"{PREFIX}BACKEND must be one of {', '.join(BACKENDS)}, not {self.backend!r}")

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL, the default SQLite file filled in."""
        return self.db_url or f"sqlite:///{Path(self.work_dir).resolve() / 'xlgen.db'}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``XLGEN_*`` variables, then ``overrides`` (for tests).

        Raises:
            ValueError: On a variable that does not parse or a value out of range.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind: type = type(f.default)
            try:
                if kind is bool:
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                else:
                    values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that :meth:`from_env` reads back into these settings."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[PREFIX + f.name.upper()] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out
