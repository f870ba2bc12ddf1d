"""Naming processes so that a reused pid is not mistaken for the trainer (no subprocess here; the
trainer's life and death are in test_service_jobs_integration.py)."""

from __future__ import annotations

import os

from xlgen.service import trainer_process


def test_a_process_is_named_by_pid_and_start_time() -> None:
    me = trainer_process.identity()
    pid, _, started = me.partition(":")
    assert int(pid) == os.getpid() and started == trainer_process.start_time(os.getpid()) and started
    assert trainer_process.alive(me)
    assert not trainer_process.alive(f"{pid}:{int(started) + 1}")  # the same pid, started later: another process
    assert not trainer_process.alive("999999999:1") and not trainer_process.alive("") and not trainer_process.alive("x:1")
    assert trainer_process.identity(999999999) == ""
    assert os.getpid() in trainer_process.group_members(os.getpgid(0))
    assert trainer_process.kill_group(999999999, "1", wait_s=0)  # nothing left of a group that is gone


def test_wrap_starts_the_command_through_the_death_signal_wrapper() -> None:
    cmd = trainer_process.wrap(["python", "-m", "xlgen.training.train", "--data", "d"])
    assert cmd[1:5] == ["-m", "xlgen.service.trainer_process", "--parent", str(os.getpid())]
    assert cmd[5:] == ["--", "python", "-m", "xlgen.training.train", "--data", "d"]
