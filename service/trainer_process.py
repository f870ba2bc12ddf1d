"""The trainer's process: started in a process group of its own, killed with the server, and recognised
again (by pid and kernel start time) after a restart, so that a retraining never runs on as an orphan.

The trainer is started through this module, ``python -m xlgen.service.trainer_process --parent PID -- CMD...``:
in the fresh interpreter it asks Linux to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``,
which survives ``exec``), checks that the parent is still the server (it may have died before the
request took effect), then ``exec``\\ s the trainer in its own place, keeping the pid. Doing this in the
child rather than in a ``preexec_fn`` keeps Python code out of the forked copy of a threaded server.

Linux sends the death signal when the parent *thread* that forked exits, not the process: the server
starts trainers from its event loop thread, which lives as long as the server.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
HOST = socket.gethostname()
PROC = Path("/proc")


def wrap(cmd: Sequence[str]) -> list[str]:
    """``cmd`` started through this module, to die with the calling process."""
    return [sys.executable, "-m", "xlgen.service.trainer_process", "--parent", str(os.getpid()), "--", *cmd]


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/PID/stat`` (after the command name, which may hold spaces), or None."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2:].split()


def start_time(pid: int) -> str | None:
    """The process's kernel start time (clock ticks since boot, as text), or None when it is gone or a zombie.

    Together with the pid it names one process for good, since a reused pid gets a later start time. Without
    ``/proc`` (not Linux) it is ``""`` for any live pid, which cannot tell a reused pid apart.
    """
    if not PROC.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of stat(5)


def identity(pid: int | None = None) -> str:
    """``"pid:start time"`` of ``pid`` (default: this process), or ``""`` when it is gone."""
    pid = os.getpid() if pid is None else pid
    started = start_time(pid)
    return "" if started is None else f"{pid}:{started}"


def alive(ident: str) -> bool:
    """Whether the process named by :func:`identity` still runs (the same process, not a reused pid)."""
    pid, _, started = ident.partition(":")
    if not pid.isdigit():
        return False
    return start_time(int(pid)) == started


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    if not PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
                out.append(int(entry.name))
    return out


def kill_group(pgid: int, leader_start: str, wait_s: float = 10.0) -> bool:
    """SIGKILLs process group ``pgid`` if it is still the trainer's: its leader (pid ``pgid``) has the recorded
    start time, or the leader is gone but members are left (a group's number is not handed out again while
    any member lives). Waits up to ``wait_s`` for the members to go.

    Returns:
        Whether no member of the group is left.
    """
    leader = start_time(pgid)
    if leader is not None and leader != leader_start:
        return True  # the pid belongs to another process now: the trainer's group is long gone
    if leader is not None or group_members(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def main(argv: Sequence[str] | None = None) -> int:
    """Sets the death signal, checks the parent, and execs the command."""
    parser = argparse.ArgumentParser(prog="python -m xlgen.service.trainer_process")
    parser.add_argument("--parent", type=int, required=True, help="pid of the server; exit at once if it is gone")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    _die_with_parent()
    if os.getppid() != args.parent:  # the server died before the death signal was armed
        return 1
    os.execvp(cmd[0], cmd)  # a bare name is looked up on PATH, as a shell would
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
