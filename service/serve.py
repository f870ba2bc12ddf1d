"""``xlgen serve``: the REST service under uvicorn.

Options become ``XLGEN_*`` environment variables (unset options keep the environment's value, or
the default), then uvicorn runs the ``xlgen.service.app:create_app`` factory, so that every worker
process reads the same settings::

    xlgen serve --model runs/goemotions/model --port 8000
    python -m xlgen.service.serve --model runs/goemotions/model --port 8000    # the same, without the CLI

The connections are served by :class:`xlgen.service.connections.GuardedH11Protocol` (a head and a body
timeout, a connection cap below the open-file limit), with the keep-alive timeout, the backlog and the
largest request head of the settings; the soft open-file limit is raised to the hard one first. Plain
``uvicorn --factory xlgen.service.app:create_app`` runs the same app without those guards.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

from xlgen.extras import require
from xlgen.service.settings import PREFIX, Settings


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return port


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return n


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``xlgen serve``: host, port, workers, and one per :class:`Settings` field."""
    parser.add_argument("--host", default=os.environ.get("XLGEN_HOST", "127.0.0.1"), help="address to bind (XLGEN_HOST)")
    parser.add_argument("--port", type=_port, default=os.environ.get("XLGEN_PORT", "8000"), help="port (XLGEN_PORT)")
    parser.add_argument("--workers", type=_positive, default=os.environ.get("XLGEN_WORKERS", "1"),
                        help="uvicorn worker processes, each with its own model copy (XLGEN_WORKERS)")
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        env = PREFIX + f.name.upper()
        text = f.metadata["help"]
        # a help text that says what its default means keeps that instead of the raw value
        help_text = f"{text} ({env})" if "(default" in text else f"{text} ({env}; default {f.default!r})"
        # SUPPRESS: an option not given leaves the attribute unset, so the environment's value holds
        if isinstance(f.default, bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=type(f.default), default=argparse.SUPPRESS, help=help_text)


def cmd_serve(args: argparse.Namespace) -> int:
    """Validates the settings, exports them to the environment, and runs uvicorn."""
    overrides = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name, None) is not None}
    settings = Settings.from_env(**overrides)  # raises ValueError (exit 2) on a bad value
    if not settings.model:
        raise ValueError("give --model DIR (or XLGEN_MODEL)")
    if settings.db_url.startswith("postgresql"):
        require("postgres", "a PostgreSQL --db-url")
    if settings.llm_url:
        require("llm", "second opinions (XLGEN_LLM_URL)")
    if not os.path.isfile(os.path.join(settings.model, "xlgen.json")):
        raise FileNotFoundError(f"{settings.model}: not a model directory (no xlgen.json)")
    from xlgen.devices import resolve_device
    from xlgen.model import read_model_meta

    read_model_meta(os.path.join(settings.model, "xlgen.json"))  # a broken one: one line here, not a worker's traceback
    resolve_device(settings.device)
    os.environ.update(settings.to_env())
    run_server(settings, args.host, args.port, args.workers)
    return 0


def run_server(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Runs the app under uvicorn with the guarded protocol and the settings' connection limits (the settings
    must be in the environment already: every worker reads them there)."""
    import uvicorn

    from xlgen.service.connections import GuardedH11Protocol, install_accept_throttle, open_file_cap, raise_open_file_limit

    soft = raise_open_file_limit()
    cap = open_file_cap(settings.limit_concurrency)
    if cap < settings.limit_concurrency:
        print(f"xlgen serve: at most {cap} connections per worker (open-file limit {soft}; XLGEN_LIMIT_CONCURRENCY is "
              f"{settings.limit_concurrency})", file=sys.stderr)
    install_accept_throttle()
    uvicorn.run("xlgen.service.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=settings.log_level.lower(), access_log=False, http=GuardedH11Protocol,
                timeout_keep_alive=settings.keep_alive_s, backlog=settings.backlog,  # type: ignore[arg-type]
                h11_max_incomplete_event_size=settings.max_head_bytes)


def main(argv: list[str] | None = None) -> int:
    """``python -m xlgen.service.serve``: ``xlgen serve`` without the command line's other commands."""
    parser = argparse.ArgumentParser(prog="python -m xlgen.service.serve", description="Run the REST service under uvicorn.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_serve(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
