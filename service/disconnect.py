"""Work that stops when its client leaves.

A handler that starts model work (a tag request, a Label Studio predict call, a next-batch scoring) runs it
through :func:`until_disconnected`: once the request's body is read, the ASGI ``receive`` channel has nothing
more to say until the client disconnects (or the response is sent), so a watcher waiting on it learns that
the client is gone while the work runs. The work is then cancelled: the micro-batcher drops the request's
chunks not yet run and tells the running one to stop (see :mod:`xlgen.service.batcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from litestar import Request
from litestar.exceptions import HTTPException

T = TypeVar("T")

CLIENT_CLOSED = 499
"""The status recorded (in the metrics and the log) for a request whose client left before its answer."""


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (or the response has been sent)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled as soon as the client disconnects.

    Raises:
        HTTPException: 499 when the client left first (nobody reads the answer; the metrics count it).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise HTTPException(status_code=CLIENT_CLOSED, detail="the client closed the connection before the answer")
