#!/usr/bin/env python3
"""End-to-end check of the xlgen service against a real Label Studio.

Starts, on loopback only, a Label Studio (the ``label-studio`` package, in its own virtual environment,
SQLite in a temporary folder, no analytics, no outbound calls) and the xlgen service on a tiny model
trained for the occasion, then drives Label Studio through its own REST API the way a user does:
a project with a multi-choice config, xlgen connected as its ML backend (basic auth carrying the API
key), a webhook carrying the key in ``X-API-Key``, imported tasks, predictions, single and bulk
annotations, an update, single and bulk deletions, and training. After each step it checks what
xlgen stored (``GET /v1/annotations``, ``?history=true``, ``GET /v1/jobs/{id}``) and prints one
PASS or FAIL line; the exit status is 1 if any step failed.

Label Studio reaches xlgen through a small recording proxy in this process, so that every request
Label Studio really sends (``/health``, ``/setup``, ``/predict``, webhook bodies) and xlgen's answer
can be shown when a step fails, and saved as test fixtures with ``--capture``.

Usage::

    python scripts/labelstudio_e2e.py            # installs Label Studio into .ls-venv on first use
    python scripts/labelstudio_e2e.py --capture  # also rewrites tests/fixtures/labelstudio/real/
    python scripts/labelstudio_e2e.py --keep     # leaves both servers running afterwards

Only the standard library and httpx are used here; Label Studio itself runs as a subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import xml.sax.saxutils
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
LS_SPEC = "label-studio>=1.23,<1.24"
FIXTURES = ROOT / "tests" / "fixtures" / "labelstudio" / "real"
ANNOTATION_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"]
# Label Studio 1.23 sends training to the ML backend's /webhook as START_TRAINING while this flag is on
# (its default); with it off, it posts the legacy /train body instead.
TRAIN_FLAG = "ff_back_dev_1417_start_training_mlbackend_webhooks_250122_long"
SECRET_KEYS = {"access_token", "token", "password", "basic_auth_pass"}
TINY_TRAIN = ["--preset", "tiny", "--eval-every", "20", "--batch-size", "16", "--lr", "3e-2",
              "--max-target-length", "16", "--max-input-length", "48", "--no-progress"]


class StepFailed(Exception):
    """A check of a step did not hold; the message says which and why."""


class SetupError(Exception):
    """The servers could not be prepared; nothing was checked."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(message: str) -> None:
    print(message, flush=True)


def short(value: Any, limit: int = 1500) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# ------------------------------------------------------------------------------------ recording proxy


@dataclass
class Exchange:
    """One request Label Studio sent towards xlgen, and xlgen's answer (none for capture-only paths)."""

    step: str
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    response: Any = None

    @property
    def action(self) -> str | None:
        return self.body.get("action") if isinstance(self.body, dict) else None

    def describe(self) -> str:
        return (f"{self.method} {self.path} sent by Label Studio: {short(self.body)}\n"
                f"xlgen answered {self.status}: {short(self.response, 600)}")


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


class Recorder:
    """A loopback HTTP proxy in front of xlgen that keeps every exchange.

    Paths under ``/capture/`` are recorded and answered here without reaching xlgen (a second
    webhook for every Label Studio event, to capture the payloads xlgen does not subscribe to).
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.exchanges: list[Exchange] = []
        self.step = "setup"
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=300)
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ex = Exchange(recorder.step, self.command, self.path, dict(self.headers.items()), _parse(raw))
                if self.path.startswith("/capture/"):
                    status, body, ctype = 200, b'{"status": "ok"}', "application/json"
                else:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
                    try:
                        r = recorder._client.request(self.command, recorder.target + self.path, content=raw, headers=headers)
                        status, body, ctype = r.status_code, r.content, r.headers.get("content-type", "application/json")
                    except httpx.HTTPError as e:
                        status, body, ctype = 502, json.dumps({"error": f"proxy: {e}"}).encode(), "application/json"
                    ex.status, ex.response = status, _parse(body)
                with recorder._lock:
                    recorder.exchanges.append(ex)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="recorder", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mark(self) -> int:
        with self._lock:
            return len(self.exchanges)

    def since(self, mark: int) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges[mark:])

    def wait_for(self, mark: int, predicate: Callable[[Exchange], bool], timeout: float = 10.0) -> list[Exchange]:
        """The exchanges after ``mark`` that match, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.since(mark) if predicate(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def webhook_to_xlgen(action: str) -> Callable[[Exchange], bool]:
    return lambda e: e.path == "/webhook" and e.action == action


# ----------------------------------------------------------------------------------------- processes


def stop_process(proc: subprocess.Popen) -> None:
    """Stops a child started in its own session, with everything it started (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float, name: str,
               headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"{name} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise SetupError(f"{name} not ready within {timeout:.0f} s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    """The log's last lines, without Label Studio's access log; a JSON record's traceback cut to its end."""
    if not path.is_file():
        return "(no log)"
    out: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if "django.server::log_message" in line or not line.strip() or (out and out[-1] == line):
            continue
        with contextlib.suppress(ValueError, AttributeError):
            record = json.loads(line)
            exc = [x for x in record.get("exc", "").splitlines() if x.strip(" ^~")]
            line = f"{record.get('level')}: {record.get('msg')} {record.get('path', '')} {' | '.join(exc[-2:])}".rstrip()
        out.append(line)
    return "\n".join(out[-lines:])


def xlgen_command() -> list[str]:
    """``xlgen`` of the interpreter running this script (this checkout first on the path)."""
    script = Path(sys.executable).with_name("xlgen")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "xlgen.service.cli"]


def xlgen_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------- label studio


def ls_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_label_studio(venv: Path, install: bool) -> str:
    """Label Studio's version in ``venv``, installing it there first when missing."""
    if not (venv / "bin" / "label-studio").is_file():
        if not install:
            raise SetupError(f"Label Studio is not installed in {venv} (run without --no-install to install it)")
        say(f"installing {LS_SPEC} into {venv} (once; a few minutes)")
        started = time.monotonic()
        if not ls_python(venv).is_file():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run([str(ls_python(venv)), "-m", "pip", "install", "-q", LS_SPEC], capture_output=True, text=True)
        noise = "WARNING: Location"  # pip's note about configured index folders that do not exist here
        output = "\n".join(line for line in (pip.stdout + pip.stderr).splitlines() if not line.startswith(noise))
        if pip.returncode != 0:
            raise SetupError(f"pip install {LS_SPEC} failed:\n{output[-3000:]}")
        say(f"installed in {time.monotonic() - started:.0f} s")
    out = subprocess.run([str(ls_python(venv)), "-c", "import label_studio; print(label_studio.__version__)"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SetupError(f"{venv}: label_studio does not import:\n{out.stderr[-2000:]}")
    return out.stdout.strip()


SETTINGS_MODULE = "xlgen_e2e_ls_settings"
SETTINGS_SOURCE = '''\
"""Label Studio's own settings, with its RQ queues pointed at a closed port.

Label Studio's settings hard-code Redis on localhost:6379 and, when one answers there, send webhooks
and predictions through RQ queues that need a worker; pointed at nothing, it runs them in the request
(and stays off any Redis this machine runs). Base settings are imported first because Label Studio's
settings module reads ``django.conf.settings`` while it is itself being imported.
"""
from core.settings.base import *  # noqa: F401,F403

for _queue in RQ_QUEUES.values():  # noqa: F405
    _queue.update(HOST="127.0.0.1", PORT={port})

from label_studio.core.settings.label_studio import *  # noqa: E402,F401,F403
'''


def ls_environment(data_dir: Path, settings_dir: Path) -> dict[str, str]:
    """A minimal environment: Label Studio also reads unprefixed names (HOST, PORT, USERNAME ...)."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL") if k in os.environ}
    return {
        **keep,
        "PYTHONPATH": str(settings_dir),
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
        # nothing leaves the machine
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false",
        "FEATURE_FLAGS_OFFLINE": "true", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # the ML backend and the webhook live on loopback, which Label Studio blocks by default
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
        # the defaults (1 s for webhooks and health, 3 s for setup) are too short on a loaded 2-core
        # machine: a late answer is a lost event, since Label Studio does not retry webhooks
        "WEBHOOK_TIMEOUT": "30", "ML_TIMEOUT_HEALTH": "10", "ML_TIMEOUT_SETUP": "30",
    }


def write_settings(settings_dir: Path) -> None:
    settings_dir.mkdir(parents=True, exist_ok=True)
    (settings_dir / f"{SETTINGS_MODULE}.py").write_text(SETTINGS_SOURCE.replace("{port}", str(free_port())))


def database_template(venv: Path, version: str, settings_dir: Path) -> Path:
    """A migrated, empty Label Studio data folder, made once per version (migrating takes minutes)."""
    template = venv / f"xlgen-e2e-data-{version}"
    if (template / "label_studio.sqlite3").is_file():
        return template
    say("migrating a Label Studio database template (once per version; a few minutes)")
    started = time.monotonic()
    building = Path(tempfile.mkdtemp(prefix="template-", dir=venv))
    try:
        out = subprocess.run([str(venv / "bin" / "label-studio"), "version", "--data-dir", str(building)],
                             env=ls_environment(building, settings_dir), capture_output=True, text=True)
        if out.returncode != 0 or not (building / "label_studio.sqlite3").is_file():
            raise SetupError(f"label-studio could not migrate its database:\n{(out.stdout + out.stderr)[-3000:]}")
        (building / ".env").unlink(missing_ok=True)  # its SECRET_KEY: each run makes its own
        building.rename(template)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    say(f"template ready in {time.monotonic() - started:.0f} s")
    return template


@dataclass
class LabelStudio:
    """A running Label Studio and an API client for it."""

    proc: subprocess.Popen
    url: str
    token: str
    username: str
    password: str
    log: Path
    data_dir: Path
    env: dict[str, str]
    venv: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=300)

    def wait_ready(self) -> None:
        wait_ready(f"{self.url}/api/projects", self.proc, self.log, 240, "Label Studio",
                   headers={"Authorization": f"Token {self.token}"})

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200, 201), **kw: Any) -> Any:
        r = self.client.request(method, path, **kw)
        if r.status_code not in expect:
            raise StepFailed(f"Label Studio {method} {path} answered {r.status_code}: {short(r.text, 1000)}")
        return r.json() if r.content else None


def launch_label_studio(venv: Path, template: Path, run_dir: Path, settings_dir: Path) -> LabelStudio:
    """Starts Label Studio on a copy of the database template, with a user and an API token;
    :meth:`LabelStudio.wait_ready` waits for it (so that the tiny model trains meanwhile)."""
    data_dir = run_dir / "label-studio"
    shutil.copytree(template, data_dir)
    port, token, password = free_port(), secrets.token_hex(20), secrets.token_urlsafe(16)
    username = "e2e@xlgen.local"
    env = ls_environment(data_dir, settings_dir)
    log = run_dir / "label-studio.log"
    cmd = [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--username", username, "--password", password, "--user-token", token,
           "--enable-legacy-api-token", "--log-level", "WARNING"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=run_dir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return LabelStudio(proc, f"http://127.0.0.1:{port}", token, username, password, log, data_dir, env, venv)


# -------------------------------------------------------------------------------------------- xlgen


def write_slice(source: Path, out: Path, n_train: int = 400) -> None:
    """train / dev / test slices of a JSON Lines dataset folder (gzip'd or not)."""
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", 60), ("test", 60)):
        path = source / f"{split}.jsonl.gz"
        opener = gzip.open if path.is_file() else open
        path = path if path.is_file() else source / f"{split}.jsonl"
        with opener(path, "rt", encoding="utf-8") as f, open(out / f"{split}.jsonl", "w", encoding="utf-8") as g:
            for i, line in enumerate(f):
                if i >= n:
                    break
                g.write(line)


def task_texts(source: Path, n: int) -> list[str]:
    """``n`` test texts the tiny model did not see (after the test slice's first 60)."""
    path = source / "test.jsonl.gz"
    opener = gzip.open if path.is_file() else open
    path = path if path.is_file() else source / "test.jsonl"
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(60 + n), f, strict=False)]
    return [r["text"] for r in rows[60:60 + n]]


def train_tiny_model(data: Path, run_dir: Path, steps: int) -> Path:
    log = run_dir / "train.log"
    cmd = [*xlgen_command(), "train", "--data", str(data), "--output-dir", str(run_dir / "tiny-run"), "--max-steps", str(steps),
           "--threads", "2", *TINY_TRAIN]
    with open(log, "wb") as out:
        code = subprocess.run(cmd, env=xlgen_env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SetupError(f"xlgen train exited with {code}:\n{tail(log)}")
    return run_dir / "tiny-run" / "model"


@dataclass
class Xlgen:
    proc: subprocess.Popen
    url: str
    key: str
    log: Path
    work_dir: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=120)

    def stored(self) -> dict[str, dict[str, Any]]:
        """``GET /v1/annotations``: the latest labels per document id."""
        r = self.client.get("/v1/annotations")
        r.raise_for_status()
        return {row["id"]: row for row in map(json.loads, r.text.splitlines())}

    def history(self) -> list[dict[str, Any]]:
        r = self.client.get("/v1/annotations", params={"history": "true"})
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines()]

    def version(self) -> str:
        return str(self.client.get("/v1/model").json()["version"])


def start_xlgen(model: Path, train_data: Path, run_dir: Path, retrain_steps: int, port: int) -> Xlgen:
    """``xlgen serve`` on loopback with an API key and retraining on ``train_data``, once ready."""
    key = secrets.token_urlsafe(24)
    work_dir, log = run_dir / "xlgen-service", run_dir / "xlgen.log"
    retrain = " ".join([*TINY_TRAIN, "--max-steps", str(retrain_steps), "--eval-every", str(max(1, retrain_steps // 2)),
                        "--threads", "1"])
    cmd = [*xlgen_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--model", str(model),
           "--work-dir", str(work_dir), "--train-data", str(train_data), "--api-key", key, "--threads", "1",
           "--retrain-args", retrain, "--model-poll-s", "0", "--log-level", "WARNING"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=xlgen_env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    xl = Xlgen(proc, f"http://127.0.0.1:{port}", key, log, work_dir)
    try:
        wait_ready(f"{xl.url}/health/ready", proc, log, 180, "xlgen serve")
    except BaseException:
        stop_process(proc)
        raise
    return xl


# -------------------------------------------------------------------------------------------- steps


def label_config(choices: list[str]) -> str:
    options = "\n".join(f'    <Choice value={xml.sax.saxutils.quoteattr(c)}/>' for c in choices)
    return ('<View>\n  <Text name="text" value="$text"/>\n'
            f'  <Choices name="label" toName="text" choice="multiple" showInLine="true">\n{options}\n  </Choices>\n</View>')


def choices_of(result: list[dict[str, Any]]) -> list[str]:
    return [c for region in result or [] if region.get("type") == "choices" for c in region.get("value", {}).get("choices", [])]


@dataclass
class Run:
    """What the steps share."""

    ls: LabelStudio
    xl: Xlgen
    rec: Recorder
    labels: list[str]
    texts: list[str]
    capture: bool
    train_timeout: float
    project: int = 0
    ml_backend: int = 0
    tasks: list[int] = field(default_factory=list)
    predictions: dict[int, list[str]] = field(default_factory=dict)
    annotation: int = 0
    bulk: dict[int, list[str]] = field(default_factory=dict)  # task -> labels of its bulk-created annotation
    deleted: set[int] = field(default_factory=set)
    job: str | None = None

    def doc(self, task: int) -> str:
        return f"ls-{task}"

    def expect_stored(self, task: int, labels: list[str], text: str | None = None) -> None:
        row = self.xl.stored().get(self.doc(task))
        check(row is not None, f"xlgen has no annotation for {self.doc(task)} (GET /v1/annotations)")
        assert row is not None
        check(sorted(row["labels"]) == sorted(labels), f"xlgen stored {row['labels']} for {self.doc(task)}, expected {labels}")
        if text is not None:
            check(row["text"] == text, f"xlgen stored the text {row['text']!r} for {self.doc(task)}, expected {text!r}")

    def delivered(self, mark: int, action: str) -> Exchange:
        """The webhook event ``action`` Label Studio sent since ``mark``: once, and answered 2xx."""
        found = self.rec.wait_for(mark, webhook_to_xlgen(action))
        seen = sorted({e.action or e.path for e in self.rec.since(mark)})
        check(found, f"Label Studio sent no {action} webhook (seen: {seen})")
        for ex in found:
            check(ex.status is not None and 200 <= ex.status < 300, f"xlgen rejected the {action} webhook:\n{ex.describe()}")
        check(len(found) == 1, f"Label Studio delivered {action} {len(found)} times")
        return found[0]

    def require_stored(self, task: int, why: str) -> None:
        check(self.doc(task) in self.xl.stored(), f"{self.doc(task)} is not stored in xlgen ({why}), so this step cannot be checked")


def step_project(run: Run) -> str:
    project = run.ls.call("POST", "/api/projects", json={"title": "xlgen end-to-end", "label_config": label_config(run.labels)})
    run.project = int(project["id"])
    parsed = run.ls.call("GET", f"/api/projects/{run.project}")["parsed_label_config"]["label"]
    check(sorted(parsed["labels"]) == sorted(run.labels), f"the project's choices differ: {parsed}")
    return f"project {run.project} with {len(run.labels)} choices"


def connect_backend(run: Run, project: int) -> dict[str, Any]:
    return run.ls.call("POST", "/api/ml", json={
        "project": project, "url": run.rec.url, "title": "xlgen", "is_interactive": False,
        "auth_method": "BASIC_AUTH", "basic_auth_user": "xlgen", "basic_auth_pass": run.xl.key,
    })


def step_backend(run: Run) -> str:
    mark = run.rec.mark()
    backend = connect_backend(run, run.project)
    run.ml_backend = int(backend["id"])
    setup = run.rec.wait_for(mark, lambda e: e.path == "/setup")
    health = run.rec.wait_for(mark, lambda e: e.path == "/health")
    check(health and health[-1].status == 200, f"/health: {health[-1].describe() if health else 'never called'}")
    check(setup and setup[-1].status == 200, f"/setup: {setup[-1].describe() if setup else 'never called'}")
    check(setup[-1].headers.get("Authorization", "").startswith("Basic "), "Label Studio sent /setup without basic auth")
    version = run.xl.version()
    check(backend.get("state") == "CO", f"Label Studio's backend state is {backend.get('state')!r} "
          f"({backend.get('error_message')}), not CO (connected)")
    check(backend.get("model_version") == version, f"model_version {backend.get('model_version')!r} != xlgen's {version!r}")
    return f"ML backend {run.ml_backend} connected (state CO, model_version {version}, basic auth on /setup)"


def secure_backend_webhook(run: Run, project: int) -> tuple[dict[str, Any], bool]:
    """The webhook to xlgen's ``/webhook``, with the API key in ``X-API-Key`` and annotation events only.

    Connecting an ML backend makes Label Studio create a webhook to ``<backend url>/webhook`` for every
    event and without headers (so without the key): it is edited rather than a second one added, which
    would deliver every annotation event twice. Returns the webhook and whether Label Studio created it.
    """
    url = f"{run.rec.url}/webhook"
    hooks = [h for h in run.ls.call("GET", "/api/webhooks", params={"project": project}) if h["url"] == url]
    settings = {"headers": {"X-API-Key": run.xl.key}, "send_payload": True, "send_for_all_actions": False,
                "actions": ANNOTATION_ACTIONS, "is_active": True}
    if hooks:
        return run.ls.call("PATCH", f"/api/webhooks/{hooks[0]['id']}/", json=settings), True
    return run.ls.call("POST", "/api/webhooks", json={"project": project, "url": url, **settings}), False


def step_webhook(run: Run) -> str:
    hook, created_by_ls = secure_backend_webhook(run, run.project)
    check(sorted(hook["actions"]) == sorted(ANNOTATION_ACTIONS), f"webhook actions: {hook['actions']}")
    check(hook["headers"] == {"X-API-Key": run.xl.key}, "the webhook's headers were not saved")
    to_xlgen = [h for h in run.ls.call("GET", "/api/webhooks", params={"project": run.project}) if h["url"] == hook["url"]]
    check(len(to_xlgen) == 1, f"{len(to_xlgen)} webhooks point at xlgen: every event would arrive {len(to_xlgen)} times")
    if run.capture:  # every other event too, answered by the proxy itself
        run.ls.call("POST", "/api/webhooks", json={
            "project": run.project, "url": f"{run.rec.url}/capture/webhook", "send_payload": True,
            "send_for_all_actions": True, "is_active": True,
        })
    before = run.xl.stored()
    check(before == {}, f"xlgen already holds annotations: {sorted(before)}")
    origin = "the webhook Label Studio created for the ML backend (all events, no headers)" if created_by_ls else "a new webhook"
    return f"{origin}, webhook {hook['id']}, now sends {', '.join(ANNOTATION_ACTIONS)} with the key in X-API-Key"


def step_import(run: Run) -> str:
    reply = run.ls.call("POST", f"/api/projects/{run.project}/import", params={"return_task_ids": "true"},
                        json=[{"data": {"text": t}} for t in run.texts])
    run.tasks = [int(t) for t in reply["task_ids"]]
    check(len(run.tasks) == len(run.texts), f"imported {len(run.tasks)} of {len(run.texts)} tasks")
    stored = run.xl.stored()
    check(stored == {}, f"importing tasks stored annotations in xlgen: {sorted(stored)}")
    return f"{len(run.tasks)} tasks {run.tasks[0]}..{run.tasks[-1]}; xlgen still stores nothing"


def predictions_of(run: Run, task: int) -> list[dict[str, Any]]:
    return list(run.ls.call("GET", "/api/predictions", params={"task": task}))


def step_predict(run: Run) -> str:
    mark = run.rec.mark()
    reply = run.ls.call("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": run.project},
                        json={"selectedItems": {"all": True, "excluded": []}})
    calls = run.rec.wait_for(mark, lambda e: e.path == "/predict")
    check(calls, f"Label Studio never called /predict (action answered {reply})")
    bad = [e for e in calls if e.status != 200]
    check(not bad, f"/predict failed:\n{bad[0].describe() if bad else ''}")
    sent = sum(len(e.body.get("tasks", [])) for e in calls)
    version = run.xl.version()
    for task in run.tasks:
        preds = [p for p in predictions_of(run, task) if p.get("model_version") == version]
        check(preds, f"task {task} has no prediction of model {version} (after {len(calls)} /predict calls)")
        result = preds[0]["result"]
        check(result and result[0].get("from_name") == "label" and result[0].get("to_name") == "text"
              and result[0].get("type") == "choices", f"task {task}: prediction result {short(result)}")
        run.predictions[task] = choices_of(result)
    check(any(run.predictions.values()), f"every prediction chose nothing: {short(calls[-1].response)}")
    check(run.xl.stored() == {}, "predicting stored annotations in xlgen")
    shown = {t: run.predictions[t] for t in run.tasks[:3]}
    return f"{len(calls)} /predict call(s) for {sent} tasks; every task has a prediction, e.g. {shown}"


def step_predict_subset(run: Run) -> str:
    """A second project whose config lists only some of the model's labels: no other label may be predicted."""
    allowed = [x for x in run.labels if x not in {c for cs in run.predictions.values() for c in cs}][:3] or run.labels[-3:]
    project = int(run.ls.call("POST", "/api/projects", json={"title": "xlgen subset", "label_config": label_config(allowed)})["id"])
    connect_backend(run, project)
    secure_backend_webhook(run, project)
    tasks = run.ls.call("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"},
                        json=[{"data": {"text": t}} for t in run.texts[:2]])["task_ids"]
    mark = run.rec.mark()
    run.ls.call("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                json={"selectedItems": {"all": True, "excluded": []}})
    calls = run.rec.wait_for(mark, lambda e: e.path == "/predict")
    check(calls and all(e.status == 200 for e in calls), f"/predict: {calls[-1].describe() if calls else 'never called'}")
    outside = {}
    for task in tasks:
        for p in predictions_of(run, task):
            extra = [c for c in choices_of(p["result"]) if c not in allowed]
            if extra:
                outside[task] = extra
    check(not outside, f"predictions chose labels that are not in the config's choices {allowed}: {outside}; "
          f"Label Studio does not render them.\n{calls[-1].describe()}")
    return f"project {project} with choices {allowed}: every predicted choice is one of them"


def step_single(run: Run) -> str:
    task, labels = run.tasks[0], [run.labels[1], run.labels[2]]
    mark = run.rec.mark()
    ann = run.ls.call("POST", f"/api/tasks/{task}/annotations/", json={
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": labels}}], "lead_time": 2.5})
    run.annotation = int(ann["id"])
    run.delivered(mark, "ANNOTATION_CREATED")
    run.expect_stored(task, labels, run.texts[0])
    return f"annotation {run.annotation} on task {task}: xlgen stores {run.doc(task)} = {labels} with the task's text"


def step_update(run: Run) -> str:
    task, labels = run.tasks[0], [run.labels[3]]
    mark = run.rec.mark()
    run.ls.call("PATCH", f"/api/annotations/{run.annotation}", json={
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": labels}}]})
    run.delivered(mark, "ANNOTATION_UPDATED")
    run.expect_stored(task, labels)
    writes = [h for h in run.xl.history() if h["id"] == run.doc(task)]
    check(len(writes) >= 2, f"history=true holds {len(writes)} write(s) of {run.doc(task)}, expected 2")
    return f"xlgen stores {run.doc(task)} = {labels}; history keeps {len(writes)} writes"


def step_bulk(run: Run) -> str:
    tasks = run.tasks[1:4]
    mark = run.rec.mark()
    reply = run.ls.call("POST", "/api/dm/actions", params={"id": "predictions_to_annotations", "project": run.project},
                        json={"selectedItems": {"all": False, "included": tasks}, "model_version": run.xl.version()})
    for task in tasks:
        anns = run.ls.call("GET", f"/api/tasks/{task}/annotations/")
        check(anns, f"Label Studio created no annotation on task {task} ({reply})")
        run.bulk[task] = choices_of(anns[-1]["result"])
    ex = run.delivered(mark, "ANNOTATIONS_CREATED")
    body = ex.body
    check(isinstance(body.get("annotation"), list) and isinstance(body.get("task"), list),
          f"expected lists in the ANNOTATIONS_CREATED payload: {short(body)}")
    labelled = [t for t in tasks if run.bulk[t]]  # an annotation copied from an empty prediction has no label to store
    check(labelled, f"every prediction copied was empty: {run.bulk}")
    for task in labelled:
        run.expect_stored(task, run.bulk[task], run.texts[run.tasks.index(task)])
    return (f"'Create Annotations From Predictions' on tasks {tasks} sent one ANNOTATIONS_CREATED with "
            f"{len(body['annotation'])} annotations; xlgen stores {', '.join(run.doc(t) for t in labelled)}")


def step_delete(run: Run) -> str:
    task = run.tasks[0]
    run.require_stored(task, "the single annotation step failed")
    mark = run.rec.mark()
    run.ls.call("DELETE", f"/api/annotations/{run.annotation}", expect=(204,))
    run.deleted.add(task)
    ex = run.delivered(mark, "ANNOTATIONS_DELETED")
    stored = run.xl.stored()
    check(run.doc(task) not in stored, f"xlgen still exports {run.doc(task)} = {stored.get(run.doc(task), {}).get('labels')} "
          f"after Label Studio deleted annotation {run.annotation}:\n{ex.describe()}")
    return f"annotation {run.annotation} deleted; {run.doc(task)} is gone from GET /v1/annotations"


def step_bulk_delete(run: Run) -> str:
    """'Delete Annotations' on a task that has one annotation, submitted here first."""
    task, labels = run.tasks[4], [run.labels[4]]
    mark = run.rec.mark()
    run.ls.call("POST", f"/api/tasks/{task}/annotations/", json={
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": labels}}]})
    run.delivered(mark, "ANNOTATION_CREATED")
    run.expect_stored(task, labels)
    mark = run.rec.mark()
    run.ls.call("POST", "/api/dm/actions", params={"id": "delete_tasks_annotations", "project": run.project},
                json={"selectedItems": {"all": False, "included": [task]}})
    run.deleted.add(task)
    ex = run.delivered(mark, "ANNOTATIONS_DELETED")
    stored = run.xl.stored()
    check(run.doc(task) not in stored, f"xlgen still exports {run.doc(task)} = {stored.get(run.doc(task), {}).get('labels')} "
          f"after 'Delete Annotations' on task {task}:\n{ex.describe()}")
    return f"'Delete Annotations' on task {task}; {run.doc(task)} is gone from GET /v1/annotations"


def step_train(run: Run) -> str:
    mark = run.rec.mark()
    run.ls.call("POST", f"/api/ml/{run.ml_backend}/train", json={})
    found = run.rec.wait_for(mark, lambda e: e.action == "START_TRAINING" or e.path == "/train")
    check(found, "Label Studio sent neither START_TRAINING to /webhook nor /train")
    ex = found[-1]
    response = ex.response if isinstance(ex.response, dict) else {}
    run.job = response.get("job") or response.get("job_id")
    check(ex.status is not None and 200 <= ex.status < 300,
          f"xlgen answered {ex.status}: Label Studio marks the backend as failed (ERROR)\n{ex.describe()}")
    check(response.get("job"), f"xlgen's answer has no 'job' (Label Studio reads 'job' to record the training job):\n"
          f"{ex.describe()}")
    return f"{ex.action or ex.path} via {ex.path} (basic auth) answered {ex.status} with job {response['job']}"


def step_train_again(run: Run) -> str:
    mark = run.rec.mark()
    run.ls.call("POST", f"/api/ml/{run.ml_backend}/train", json={})
    found = run.rec.wait_for(mark, lambda e: e.action == "START_TRAINING" or e.path == "/train")
    check(found, "Label Studio sent no training request")
    ex = found[-1]
    check(ex.status is not None and 200 <= ex.status < 300,
          f"a second training request while one runs answered {ex.status}: Label Studio marks the backend as failed (ERROR)"
          f"\n{ex.describe()}")
    return f"answered {ex.status}: {short(ex.response, 300)}"


def step_job(run: Run) -> str:
    check(run.job, "no job id to follow (the training step failed before xlgen answered one)")
    deadline, job = time.monotonic() + run.train_timeout, {}
    while time.monotonic() < deadline:
        r = run.xl.client.get(f"/v1/jobs/{run.job}")
        check(r.status_code == 200, f"GET /v1/jobs/{run.job} answered {r.status_code}: {short(r.text, 500)}")
        job = r.json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(1)
    expected = sorted(run.doc(t) for t, labels in run.bulk.items() if labels and t not in run.deleted)
    stored = sorted(run.xl.stored())
    annotated = ((job.get("progress") or {}).get("train_docs") or {}).get("annotated")
    problems = []
    if job.get("status") != "succeeded":
        problems.append(f"job {run.job} is {job.get('status')!r}: {short(job.get('message') or '', 1500)}")
    if stored != expected:
        problems.append(f"xlgen exports {stored}; expected {expected} (deleted in Label Studio: "
                        f"{sorted(run.doc(t) for t in run.deleted)})")
    if annotated != len(expected):
        problems.append(f"job {run.job} trained on {annotated} annotated documents; expected {len(expected)} "
                        "(deleted annotations must not be retrained on)")
    check(not problems, "; ".join(problems))
    return f"job {run.job} succeeded on {annotated} annotated documents ({', '.join(expected)}): {job.get('message')}"


STEPS: list[tuple[str, Callable[[Run], str]]] = [
    ("project", step_project),
    ("ml backend", step_backend),
    ("webhook", step_webhook),
    ("import tasks", step_import),
    ("predictions", step_predict),
    ("predictions within the config", step_predict_subset),
    ("single annotation", step_single),
    ("annotation update", step_update),
    ("bulk annotations", step_bulk),
    ("delete annotation", step_delete),
    ("bulk delete", step_bulk_delete),
    ("training", step_train),
    ("training while one runs", step_train_again),
    ("retraining job", step_job),
]


def run_steps(run: Run) -> list[tuple[str, bool, str]]:
    results = []
    for name, fn in STEPS:
        run.rec.step = name
        started = time.monotonic()
        try:
            detail, ok = fn(run), True
        except StepFailed as e:
            detail, ok = str(e), False
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as e:
            detail, ok = f"{type(e).__name__}: {e}", False
        first, *rest = detail.splitlines() or [""]
        say(f"{'PASS' if ok else 'FAIL'}  {name} ({time.monotonic() - started:.1f} s): {first}")
        for line in rest:
            say(textwrap.indent(line, "      "))
        results.append((name, ok, detail))
    return results


# ------------------------------------------------------------------------------------------ capture


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<redacted>" if k in SECRET_KEYS and isinstance(v, str) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def fixture_of(ex: Exchange, version: str) -> dict[str, Any]:
    headers = {k: v for k, v in ex.headers.items() if k.lower() == "content-type"}
    for name in ("Authorization", "X-API-Key"):
        if name in ex.headers:
            scheme = ex.headers[name].split(" ", 1)[0] + " " if name == "Authorization" else ""
            headers[name] = scheme + "<redacted>"
    return {
        "label_studio_version": version,
        "step": ex.step,
        "request": {"method": ex.method, "path": ex.path.replace("/capture", "", 1), "headers": headers, "body": redact(ex.body)},
        "xlgen_response": None if ex.status is None else {"status": ex.status, "body": ex.response},
    }


def capture_legacy_train(ls: LabelStudio, ml_backend: int) -> None:
    """Has Label Studio's own ``MLBackend.train()`` post the legacy ``/train`` body (the feature flag off)."""
    code = ("import os, sys, django, label_studio\n"
            "sys.path.insert(0, os.path.dirname(label_studio.__file__))\n"
            "django.setup()\n"
            "from ml.models import MLBackend\n"
            f"MLBackend.objects.get(pk={ml_backend}).train()\n")
    env = {**ls.env, TRAIN_FLAG: "false"}
    out = subprocess.run([str(ls_python(ls.venv)), "-c", code], env=env, cwd=ls.data_dir, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        say(f"note: the legacy /train capture failed:\n{(out.stdout + out.stderr)[-2000:]}")


def write_fixtures(exchanges: list[Exchange], version: str, out: Path) -> list[str]:
    """One JSON file per kind of request: ``ml_<path>``, ``webhook_<ACTION>`` (ANNOTATIONS_DELETED from the
    data manager gets ``__bulk_delete``); capture-only events fill the actions xlgen does not subscribe to."""
    chosen: dict[str, Exchange] = {}
    for ex in exchanges:
        if ex.path.startswith("/capture/"):
            continue
        if ex.path == "/webhook":
            name = f"webhook_{ex.action}"
            if name in chosen and chosen[name].step != ex.step and ex.action == "ANNOTATIONS_DELETED":
                name = f"{name}__{ex.step.replace(' ', '_')}"
        else:
            name = f"ml_{ex.path.strip('/').split('?')[0].replace('/', '_')}"
        chosen.setdefault(name, ex)
    for ex in exchanges:
        if ex.path.startswith("/capture/"):
            chosen.setdefault(f"webhook_{ex.action}", ex)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    for name, ex in sorted(chosen.items()):
        (out / f"{name}.json").write_text(json.dumps(fixture_of(ex, version), indent=1, ensure_ascii=False) + "\n")
    return sorted(chosen)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a real Label Studio against the xlgen service on loopback and check each integration step.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            steps (one PASS/FAIL line each; exit status 1 if any fails, 2 if the servers could not start):
              project, ml backend (/health, /setup with basic auth), webhook (X-API-Key), import tasks,
              predictions ('Retrieve Predictions'), predictions within the config (a second project with
              3 choices), single annotation, annotation update, bulk annotations ('Create Annotations From
              Predictions': ANNOTATIONS_CREATED with lists), delete annotation, bulk delete ('Delete
              Annotations'), training (START_TRAINING answered with 'job'), training while one runs,
              retraining job (succeeds on the surviving annotations only).

            Label Studio runs on 127.0.0.1 with its own SQLite file in a temporary folder, analytics, Sentry
            and version checks off, loopback allowed for the ML backend and webhooks (ML_BLOCK_LOCAL_IP,
            SSRF_PROTECTION_ENABLED off), WEBHOOK_TIMEOUT=30 and ML_TIMEOUT_SETUP=30 (defaults 1 s and 3 s),
            and its RQ queues pointed at a closed port (webhooks then run inside its requests)."""),
    )
    p.add_argument("--ls-venv", type=Path, default=Path(os.environ.get("XLGEN_LS_VENV", ROOT / ".ls-venv")),
                   help="Label Studio's own virtual environment, created with pip when missing; it also caches a "
                        "migrated database template (default: $XLGEN_LS_VENV or .ls-venv at the repository root)")
    p.add_argument("--no-install", action="store_true", help="exit 2 instead of installing Label Studio when it is missing")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "goemotions",
                   help="dataset folder for the tiny model and the tasks (default: data/goemotions)")
    p.add_argument("--model", type=Path, help="serve this model directory instead of training a tiny one (its labels "
                                              "must match --data's for retraining)")
    p.add_argument("--train-steps", type=int, default=40, help="steps of the tiny model's training (default: 40)")
    p.add_argument("--retrain-steps", type=int, default=20, help="steps of the retraining Label Studio starts (default: 20)")
    p.add_argument("--tasks", type=int, default=6, help="tasks imported into Label Studio, at least 5 (default: 6)")
    p.add_argument("--train-timeout", type=float, default=300, help="seconds to wait for the retraining job (default: 300)")
    p.add_argument("--capture", action="store_true",
                   help="write the requests Label Studio really sent (webhook bodies per event, /health, /setup, "
                        "/predict, the legacy /train body) to --capture-dir, secrets redacted")
    p.add_argument("--capture-dir", type=Path, default=FIXTURES, help=f"where --capture writes (default: {FIXTURES.relative_to(ROOT)})")
    p.add_argument("--keep", action="store_true",
                   help="leave Label Studio and xlgen running afterwards (Label Studio then calls xlgen directly) and "
                        "keep the temporary folder; prints how to log in and how to stop them")
    p.add_argument("--tmp-dir", type=Path, help="parent of the temporary folder (default: the system's)")
    args = p.parse_args(argv)
    if args.tasks < 5:
        p.error("--tasks must be at least 5")
    return args


def model_labels(model: Path) -> list[str]:
    return list(json.loads((model / "labels.json").read_text())["labels"])


def keep_running(ls: LabelStudio, xl: Xlgen, run: Run, run_dir: Path) -> None:
    """Points Label Studio at xlgen itself (the proxy ends with this script) and says how to stop."""
    try:
        for project in ls.call("GET", "/api/projects")["results"]:
            for backend in ls.call("GET", "/api/ml", params={"project": project["id"]}) or []:
                # the whole connection: Label Studio's validation runs /setup with what the body gives
                ls.call("PATCH", f"/api/ml/{backend['id']}", json={
                    "project": project["id"], "url": xl.url, "auth_method": "BASIC_AUTH", "basic_auth_user": "xlgen",
                    "basic_auth_pass": xl.key})
            for hook in ls.call("GET", "/api/webhooks", params={"project": project["id"]}) or []:
                # every field again: a PATCH without "actions" clears them
                keep = {k: hook[k] for k in ("headers", "actions", "send_payload", "send_for_all_actions", "is_active")}
                ls.call("PATCH", f"/api/webhooks/{hook['id']}/", json={**keep, "url": hook["url"].replace(run.rec.url, xl.url)})
    except (httpx.HTTPError, StepFailed) as e:
        say(f"note: Label Studio still calls the proxy, which stops with this script: {e}")
    say(textwrap.dedent(f"""\
        kept running:
          Label Studio  {ls.url}  user {ls.username}  password {ls.password}  token {ls.token}
          xlgen         {xl.url}  X-API-Key {xl.key}
          folder        {run_dir}
          stop with     kill -- -{ls.proc.pid}; kill -- -{xl.proc.pid}; rm -rf {run_dir}"""))


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # a killed run cleans up like Ctrl-C, also when started in the background
        signal.signal(sig, interrupt)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            version = ensure_label_studio(args.ls_venv.resolve(), install=not args.no_install)
            say(f"Label Studio {version} in {args.ls_venv}")
            run_dir = Path(tempfile.mkdtemp(prefix="xlgen-ls-e2e-", dir=args.tmp_dir))
            cleanup = stack.enter_context(contextlib.ExitStack())
            cleanup.callback(shutil.rmtree, run_dir, ignore_errors=True)
            settings_dir = run_dir / "settings"
            write_settings(settings_dir)
            template = database_template(args.ls_venv.resolve(), version, settings_dir)

            data = run_dir / "data"
            write_slice(args.data, data)
            t = time.monotonic()
            ls = launch_label_studio(args.ls_venv.resolve(), template, run_dir, settings_dir)
            cleanup.callback(stop_process, ls.proc)
            if args.model:
                model = args.model.resolve()
            else:
                model = train_tiny_model(data, run_dir, args.train_steps)
                say(f"tiny model trained in {time.monotonic() - t:.0f} s")
            xl_port = free_port()
            rec = Recorder(f"http://127.0.0.1:{xl_port}")
            stack.callback(rec.close)
            xl = start_xlgen(model, data, run_dir, args.retrain_steps, xl_port)
            cleanup.callback(stop_process, xl.proc)
            ls.wait_ready()
            say(f"servers up {time.monotonic() - t:.0f} s after start: Label Studio {ls.url}, xlgen {xl.url} (proxy {rec.url})")
        except (SetupError, subprocess.CalledProcessError, OSError) as e:
            say(f"SETUP FAILED: {e}")
            return 2

        run = Run(ls, xl, rec, model_labels(model), task_texts(args.data, args.tasks), args.capture, args.train_timeout)
        results = run_steps(run)
        failed = [name for name, ok, _ in results if not ok]
        if args.capture:
            rec.step = "legacy train"
            capture_legacy_train(ls, run.ml_backend)
            legacy = [e for e in rec.exchanges if e.path == "/train"]
            if legacy:
                say(f"INFO  legacy /train (flag {TRAIN_FLAG} off): xlgen answered {legacy[-1].status}")
            names = write_fixtures(rec.exchanges, version, args.capture_dir)
            say(f"captured {len(names)} payloads into {args.capture_dir}: {', '.join(names)}")
        if failed:
            say(f"Label Studio log (last lines):\n{textwrap.indent(tail(ls.log, 15), '  ')}")
            say(f"xlgen log (last lines):\n{textwrap.indent(tail(xl.log, 15), '  ')}")
        say(f"summary: {len(results) - len(failed)} of {len(results)} steps passed in {time.monotonic() - started:.0f} s"
            + (f"; failed: {', '.join(failed)}" if failed else ""))
        if args.keep:
            keep_running(ls, xl, run, run_dir)
            cleanup.pop_all()
        return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted: servers stopped, temporary folder removed")
        sys.exit(130)
