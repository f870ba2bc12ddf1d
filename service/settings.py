"""Service settings, read from the environment in this one module.

Every setting is an ``XLGEN_*`` variable; ``xlgen serve`` turns its options into these variables so
that ``uvicorn --factory xlgen.service.app:create_app`` (and every uvicorn worker) sees the same settings.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from xlgen.decoding import BACKENDS

PREFIX = "XLGEN_"
PATH_FIELDS = ("model", "work_dir", "train_data")
RETRAIN_ENCODER = ("auto", "always", "never")
# options of ``python -m xlgen.training.train`` that name a file or folder: relative values in XLGEN_RETRAIN_ARGS are made
# absolute like the settings' own paths, since the trainer runs in its job folder
TRAIN_PATH_OPTIONS = ("--data", "--train-file", "--dev-file", "--test-file", "--base-model", "--clusters", "--encoder",
                      "--label-file", "--encoder-answers")


def absolute(path: str) -> str:
    """``path`` made absolute against the working directory (empty stays empty)."""
    return str(Path(path).expanduser().resolve()) if path else path


def absolute_sqlite_url(url: str) -> str:
    """A ``sqlite:///relative/file`` URL with its file made absolute; any other URL unchanged."""
    if not url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:") or os.path.isabs(parsed.database):
        return url
    return parsed.set(database=absolute(parsed.database)).render_as_string(hide_password=False)


def absolute_train_args(args: str) -> str:
    """``args`` with the value of every path option that names an existing relative file or folder made absolute
    (a hub model name such as ``t5-base`` stays as it is)."""
    tokens = shlex.split(args)
    out: list[str] = []
    pending = False
    for token in tokens:
        if pending:
            out.append(absolute(token) if os.path.exists(token) else token)
            pending = False
            continue
        name, eq, value = token.partition("=")
        if name in TRAIN_PATH_OPTIONS and eq:
            out.append(f"{name}={absolute(value) if os.path.exists(value) else value}")
        else:
            out.append(token)
            pending = name in TRAIN_PATH_OPTIONS and not eq
    return shlex.join(out) if out != tokens else args


def _env_field(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Settings:
    """How the service runs.

    Attributes:
        model: Model directory served at start (``XLGEN_MODEL``). This and the other paths are made absolute
            against the working directory when the settings are built, so that the retraining subprocess,
            which runs in its job folder, gets the same files.
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
        retrain_args: Extra ``python -m xlgen.training.train`` options for every retraining job.
        retrain_encoder: Whether retraining a ``retrieval`` model also fine-tunes its sentence encoder on
            the annotators' yes/no answers (yes: a pair, no: a hard negative) and a replay of train pairs:
            ``auto`` (when there are answers), ``always`` or ``never``.
        api_key: The API key (``X-API-Key`` header, a bearer token or the password of basic auth): every write,
            every read of annotation data, annotators and jobs, server paths. When empty the service makes one
            and keeps it in ``work_dir/api_key`` (see :mod:`xlgen.service.auth`), so that no default is open.
        read_key: A key that reads what the API key reads (annotations, progress, jobs, labels, opinions) and
            writes nothing; none when empty.
        open_tagging: ``/v1/tag`` and Label Studio's ``/predict`` answer without a key; off, they need the API
            key, the read key or an annotator's token.
        labelstudio_projects: Label Studio project ids (comma-separated) whose webhook and ``/train`` events are
            stored; an event of another project is refused (403). Empty: every project's.
        max_texts: Texts per tag request.
        max_pool_docs: Documents per pool request.
        max_chars: Characters per text.
        max_body_bytes: Request body size.
        max_batch_size: Texts merged into one model call by the micro-batcher.
        max_wait_ms: How long the micro-batcher waits for more requests before running a batch.
        max_queue: Texts waiting in the micro-batcher; further requests get 503.
        request_timeout_s: A tag request waiting longer gets 504; its chunks not yet run are dropped
            and the one running stops at its next decoding batch.
        max_request_work: Work budget of one tag request (and one Label Studio predict call), in
            token-sequences: the sum over its texts of the tokens read and written, the input tokens
            (task prefix and end of sequence included, at most the model's maximum input length) plus
            the longest decoded target (the model's ``max_new_tokens``: sampling at a high temperature
            never stops early), times the sequences decoded per text (1 greedy, ``num_beams``, or
            ``num_samples``). Above it: 400. The default is 64 texts of 512 input tokens with 64 decoded
            at beam 8.
        chunk_work: Work per model call. A larger request is cut into chunks of at most this much
            work (and ``max_batch_size`` texts) that take turns with other requests, so a light
            request waits for about one chunk rather than for a whole heavy request.
        light_work: Tag requests of at most this much work (in ``max_request_work``'s unit) whose decoding is
            beam search or greedy run on a second model thread with a micro-batcher of their own, so that a
            one-text request never waits behind the chunks of heavy requests (sampling floods, large Label
            Studio predict calls, next-batch scoring). Deterministic decodings only: they neither read the
            random generator that sampling seeds nor turn dropout on; a model call with dropout on (MC dropout
            scoring) holds the model alone. 0 runs everything on one thread.
        claim_ttl_s: How long a next-batch claim keeps a document from other annotators.
        max_claims_per_annotator: Documents one annotator may hold claimed at once (the anonymous caller
            counts as the annotator ``""``), so that one next-batch call cannot claim the whole pool.
        pool_scan: Pool documents scored per next-batch call (a random sample when the pool is larger).
        new_label_questions: Pool documents asked about per label added by name (``POST /v1/labels``).
        model_poll_s: How often a worker checks the database for a model swapped in by another
            worker or replica (0 turns it off).
        llm_url: Base URL of an OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp's
            server, Ollama) asked for a second opinion on suggested labels; off when empty.
        llm_model: Chat model name sent to that endpoint.
        llm_key: Its API key (``XLGEN_LLM_KEY``; empty for servers that need none).
        llm_timeout_s: How long one second-opinion call may take before 504.
        log_level: Logging level.
        header_timeout_s: Seconds a connection has to send a request's head (request line and headers), from
            when it opens or its previous response ends; then it is answered 408 and closed. Idle and
            slow-header connections cannot pile up.
        body_timeout_s: Seconds a request's body has to arrive once its head has; then the connection is closed
            and the request, if started, sees a disconnect.
        keep_alive_s: Seconds an idle keep-alive connection stays open after a response.
        limit_concurrency: Connections open at once (per worker process); a connection beyond it is answered 503
            and closed at once. Capped further at start to the open-file limit minus a reserve, so that the
            process never runs out of file descriptors.
        backlog: Connections the kernel queues before the server accepts them.
        max_head_bytes: Bytes of a request's head (h11's ``max_incomplete_event_size``); a larger head is a 400.
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
    retrain_encoder: str = _env_field("auto", "fine-tune a retrieval model's sentence encoder when retraining: auto (when annotators answered new-label questions), always, never")
    api_key: str = _env_field("", "API key for writes and for reading annotation data, annotators and jobs, in the X-API-Key "
                                  "header (default: made and kept in WORK_DIR/api_key)")
    read_key: str = _env_field("", "key that reads annotations, progress, jobs, labels and opinions, and writes nothing (off when empty)")
    open_tagging: bool = _env_field(True, "/v1/tag and Label Studio's /predict answer without a key")
    labelstudio_projects: str = _env_field("", "Label Studio project ids (comma-separated) whose events are stored (default: every project's)")
    max_texts: int = _env_field(64, "texts per tag request")
    max_pool_docs: int = _env_field(1000, "documents per pool request")
    max_chars: int = _env_field(10_000, "characters per text")
    max_body_bytes: int = _env_field(2_000_000, "request body size in bytes")
    max_batch_size: int = _env_field(32, "texts per model call (micro-batcher)")
    max_wait_ms: float = _env_field(5.0, "micro-batcher wait for more requests, in ms")
    max_queue: int = _env_field(1024, "texts waiting in the micro-batcher before 503")
    request_timeout_s: float = _env_field(30.0, "tag request timeout in seconds (504)")
    max_request_work: int = _env_field(294_912, "work budget per tag request or predict call: sum over texts of (input tokens + "
                                                "max_new_tokens) x beams or samples")
    chunk_work: int = _env_field(16_384, "work per model call; larger tag requests are cut into chunks that take turns")
    light_work: int = _env_field(4_096, "tag requests of at most this much work, beam or greedy, run on a model thread of their own "
                                        "beside the heavy ones (0: one thread for all)")
    claim_ttl_s: float = _env_field(1800.0, "next-batch claim lifetime in seconds")
    max_claims_per_annotator: int = _env_field(50, "documents one annotator may hold claimed at once")
    pool_scan: int = _env_field(512, "pool documents scored per next-batch call")
    new_label_questions: int = _env_field(50, "pool documents asked about per label added by name (its most similar ones)")
    model_poll_s: float = _env_field(5.0, "seconds between checks for a model swapped in elsewhere")
    llm_url: str = _env_field("", "OpenAI-compatible chat endpoint base URL for second opinions (off when empty)")
    llm_model: str = _env_field("", "chat model name for second opinions")
    llm_key: str = _env_field("", "API key of the chat endpoint")
    llm_timeout_s: float = _env_field(30.0, "seconds one second-opinion call may take (504 after)")
    log_level: str = _env_field("INFO", "logging level")
    header_timeout_s: float = _env_field(10.0, "seconds a connection has to send a request's head (then 408, closed)")
    body_timeout_s: float = _env_field(30.0, "seconds a request's body has to arrive after its head (then closed)")
    keep_alive_s: float = _env_field(5.0, "seconds an idle keep-alive connection stays open")
    limit_concurrency: int = _env_field(2048, "connections open at once per worker; beyond it 503 and closed "
                                              "(capped at the open-file limit minus a reserve)")
    backlog: int = _env_field(2048, "connections the kernel queues before they are accepted")
    max_head_bytes: int = _env_field(16_384, "bytes of a request's head (request line and headers); more is a 400")

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_pool_docs", "max_chars", "max_body_bytes", "max_batch_size", "max_queue", "pool_scan",
                     "max_claims_per_annotator", "max_request_work", "chunk_work", "new_label_questions", "limit_concurrency",
                     "backlog", "max_head_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{PREFIX}{name.upper()} must be positive")
        if self.max_wait_ms < 0 or self.request_timeout_s <= 0 or self.claim_ttl_s <= 0 or self.threads < 0 or self.llm_timeout_s <= 0:
            raise ValueError("max_wait_ms and threads must not be negative; timeouts and claim TTL must be positive")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{PREFIX}{name.upper()} must be positive")
        if self.read_key and self.read_key == self.api_key:
            raise ValueError(f"{PREFIX}READ_KEY must differ from {PREFIX}API_KEY (it would write)")
        for project in self.projects:
            if not project.isdigit():
                raise ValueError(f"{PREFIX}LABELSTUDIO_PROJECTS lists project ids (comma-separated integers), not {project!r}")
        if self.retrain_encoder not in RETRAIN_ENCODER:
            raise ValueError(f"{PREFIX}RETRAIN_ENCODER must be one of {', '.join(RETRAIN_ENCODER)}, not {self.retrain_encoder!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"{PREFIX}BACKEND must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        try:
            retrain_args = absolute_train_args(self.retrain_args)
        except ValueError as e:  # unbalanced quotes
            raise ValueError(f"{PREFIX}RETRAIN_ARGS does not parse: {e}") from None
        # resolved once, here: every worker and every subprocess sees the same absolute paths
        for name in PATH_FIELDS:
            object.__setattr__(self, name, absolute(getattr(self, name)))
        object.__setattr__(self, "db_url", absolute_sqlite_url(self.db_url))
        object.__setattr__(self, "retrain_args", retrain_args)

    @property
    def projects(self) -> frozenset[str]:
        """The Label Studio project ids of ``labelstudio_projects`` (empty: every project)."""
        return frozenset(p.strip() for p in self.labelstudio_projects.split(",") if p.strip())

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL, the default SQLite file filled in."""
        return self.db_url or f"sqlite:///{Path(self.work_dir) / 'xlgen.db'}"

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
