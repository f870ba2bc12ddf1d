"""What one client connection may hold of the server: time to send its request, a share of the open files.

uvicorn closes an idle keep-alive connection only after a response, so a connection that never sends a
request, or sends its headers a byte at a time, stays open for good; and its accept loop, once the process
is out of file descriptors, logs a traceback per attempt (Python 3.11's ``_accept_connection`` keeps
looping after ``EMFILE``), megabytes a second. :class:`GuardedH11Protocol` is uvicorn's h11 protocol with:

* a **head timeout**: from when a connection opens or its previous response ends, the request line and
  headers must arrive within ``XLGEN_HEADER_TIMEOUT_S``, however slowly they trickle; then a 408 and close;
* a **body timeout**: the body must arrive within ``XLGEN_BODY_TIMEOUT_S`` of the head; then the connection
  closes and the request, if its handler runs, sees a disconnect;
* a **connection cap**: at most ``XLGEN_LIMIT_CONCURRENCY`` connections at once, and never more than the
  open-file limit minus a reserve (for the database, the model's files, the trainer's pipes); a connection
  beyond it is answered 503 and closed as soon as it is accepted, so its descriptor comes back at once and
  ``accept()`` never fails for want of one.

:class:`AcceptErrorThrottle` keeps what asyncio logs of failing ``accept()`` calls (should the process run
out of descriptors all the same) to one line per interval, and refused connections are logged the same way.
The limits come from the settings of the environment (as every uvicorn worker reads them), once per process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from xlgen.service.settings import Settings

log = logging.getLogger("xlgen.service")

FD_RESERVE_MIN = 128
"""File descriptors kept out of the connection cap at least: the database's pooled connections (SQLite's WAL
and shared-memory files count three per connection), the model's and the tokenizer's files, logs, the
trainer's pipes."""
FD_RESERVE_SHARE = 0.1
"""And at least this share of the open-file limit."""

_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                    b"content-length: 41\r\n\r\nrequest head or body not received in time")
_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
             b"retry-after: 1\r\ncontent-length: 26\r\n\r\ntoo many open connections")


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may take to send a request and how many may be open.

    Attributes:
        header_timeout_s: Seconds to receive a request's head.
        body_timeout_s: Seconds to receive its body once the head is in.
        limit_concurrency: Connections open at once (before the open-file cap).
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    limit_concurrency: int = 2048

    @classmethod
    def from_settings(cls, s: Settings) -> ConnectionLimits:
        return cls(s.header_timeout_s, s.body_timeout_s, s.limit_concurrency)


@functools.cache
def process_limits() -> ConnectionLimits:
    """This process's limits, from the ``XLGEN_*`` environment (``xlgen serve`` exports the settings there)."""
    return ConnectionLimits.from_settings(Settings.from_env())


def open_file_cap(limit_concurrency: int) -> int:
    """Connections this process may hold now: ``limit_concurrency``, at most the soft open-file limit minus
    the reserve (read each time, so a limit lowered while the server runs counts at once)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit_concurrency
    return max(1, min(limit_concurrency, soft - max(FD_RESERVE_MIN, int(soft * FD_RESERVE_SHARE))))


def raise_open_file_limit() -> int:
    """Raises the soft open-file limit to the hard one (what an unprivileged process may do) and returns it:
    the default soft limit of many systems (1,024) would cap the connections below what the server can serve."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a platform that refuses: keep the soft limit
            pass
    return soft


class Throttle:
    """Lets one event through per ``interval_s`` and counts the ones held back in between (thread-safe)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last = -float("inf")
        self._held = 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        """``(whether to report now, events held back since the last report)``."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval_s:
                self._held += 1
                return False, 0
            held, self._held, self._last = self._held, 0, now
            return True, held


class AcceptErrorThrottle(logging.Filter):
    """A filter for the ``asyncio`` logger: of the ``socket.accept() out of system resource`` records, one per
    interval passes, without its traceback and with the count held back."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.throttle = Throttle(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        report, held = self.throttle.allow()
        if report:
            record.msg = f"{self.MESSAGE}: {record.exc_info[1] if record.exc_info else 'no file descriptor left'}" + (
                f" ({held} more since the last report)" if held else "")
            record.args = ()
            record.exc_info = record.exc_text = None
        return report


def install_accept_throttle(interval_s: float = 10.0) -> None:
    """Adds :class:`AcceptErrorThrottle` to the ``asyncio`` logger once."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorThrottle) for f in logger.filters):
        logger.addFilter(AcceptErrorThrottle(interval_s))


LINGER_S = 1.0
"""How long a refused connection stays half-closed so that its client reads the 503 (closing at once, with its
request unread, makes the kernel reset the connection and the client may lose the answer)."""
MAX_LINGERING = 64
"""Refused connections left lingering at once, out of the descriptors' reserve; beyond, a refusal closes at once."""

_refused = Throttle()
_lingering = 0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head timeout, a body timeout and a connection cap (see the module)."""

    limits: ConnectionLimits | None = None
    """The limits; None reads them from the environment (:func:`process_limits`). Tests may set them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = self.limits or process_limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False
        self._lingers = False

    # ------------------------------------------------------------------------------- the timer

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        """The head or the body did not arrive in time: a 408 when no response has started, then close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_REQUEST_TIMEOUT)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()  # the handler reading the body sees a disconnect
        self.transport.close()

    # ----------------------------------------------------------------------- the protocol hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap = open_file_cap(self.guard.limit_concurrency)
        if len(self.connections) >= cap:
            # refused before it counts: the answer, then the descriptor back within LINGER_S (at once when many linger)
            global _lingering
            self.transport, self._refused = transport, True
            transport.write(_TOO_MANY)
            if _lingering < MAX_LINGERING and transport.can_write_eof():
                transport.write_eof()  # the client reads the 503, then the end; its request is read and dropped below
                _lingering += 1
                self._lingers = True
                self._deadline = self.loop.call_later(LINGER_S, transport.close)
            else:
                transport.close()
            report, held = _refused.allow()
            if report:
                log.warning("connection refused: too many open connections",
                            extra={"fields": {"open": len(self.connections), "cap": cap, "refused_since_last_report": held}})
            return
        super().connection_made(transport)
        self._arm(self.guard.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        global _lingering
        self._disarm()
        if self._refused:  # never counted, nothing to tear down
            if self._lingers:
                self._lingers = False
                _lingering -= 1
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # its request, read: now the close is clean
            self.transport.close()
            return
        super().data_received(data)

    def handle_events(self) -> None:
        # the head is in once h11 has parsed a request; the body once it has the end of the message
        before = self.conn.their_state
        super().handle_events()
        after = self.conn.their_state
        if before is h11.IDLE and after is h11.SEND_BODY:
            self._arm(self.guard.body_timeout_s)
        elif after in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR) and before is not after:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm(self.guard.header_timeout_s)  # the next request's head, whatever the keep-alive timer does

    def timeout_keep_alive_handler(self) -> None:
        self._disarm()
        super().timeout_keep_alive_handler()
