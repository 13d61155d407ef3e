"""ExitDeadline, in real processes: a process that outlives its deadline ends, and says what it abandoned."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from engineroom.core.shutdown import CUT_SHORT_EXIT_CODE, LINGER_S

#: Seconds a Python process takes to start and import engineroom.core.shutdown, generously.
STARTUP_S = 5.0
PRELUDE = """
import logging, threading, time
from engineroom.core.shutdown import ExitDeadline
logging.basicConfig()
"""


def run(script: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)], capture_output=True, text=True, timeout=30
    )
    return completed, time.monotonic() - started


def test_a_finished_process_held_by_a_thread_stuck_in_a_call_exits_after_lingering_and_names_the_thread() -> None:
    # Given a process whose stop is done but for a non-daemon thread that never returns (motor's, on a frozen
    # MongoDB), which the interpreter would wait for at exit
    completed, took_s = run(
        """
        threading.Thread(target=threading.Event().wait, name="stuck-in-a-call").start()
        raise SystemExit(ExitDeadline().finish(3))
        """
    )
    # Then it exits after lingering, with the code it meant, and says what it left
    assert completed.returncode == 3, completed.stderr
    assert LINGER_S <= took_s < LINGER_S + STARTUP_S
    assert "abandoned 1 thread(s) still running (stuck-in-a-call)" in completed.stderr


def test_a_stop_that_outlives_its_deadline_is_cut_short_and_names_what_it_abandoned() -> None:
    completed, took_s = run(
        """
        deadline = ExitDeadline(describe=lambda: ["job 42: its lease lapses"])
        deadline.arm(0.5, "its grace ran out")
        time.sleep(60)  # a stop step that never ends
        """
    )
    assert completed.returncode == CUT_SHORT_EXIT_CODE, completed.stderr
    assert took_s < 0.5 + STARTUP_S
    assert "abandoned job 42: its lease lapses" in completed.stderr
    assert "exiting now" in completed.stderr and "(its grace ran out)" in completed.stderr


def test_the_earlier_deadline_holds_and_a_process_that_exits_in_time_is_left_alone() -> None:
    completed, took_s = run(
        """
        deadline = ExitDeadline()
        deadline.arm(0.5, "first")
        deadline.arm(30, "later")
        time.sleep(60)
        """
    )
    assert completed.returncode == CUT_SHORT_EXIT_CODE and "(first)" in completed.stderr
    in_time, _ = run('ExitDeadline().arm(30, "never reached")')
    assert in_time.returncode == 0 and in_time.stderr == ""
