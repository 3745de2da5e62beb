"""What a signal handler can do at any bytecode of a write to the listener:
raise, log, or both. Alarms land where they happen to land; this sweeps every
place, once each, with a trace function that acts as such a handler would.

Before Python 3.11 a signal handler runs between almost any two bytecodes,
including the first one of a ``finally`` block, so an exception it raises can
skip that block: no cleanup in the write may be relied on to run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any, Callable, List, Optional, Set

import pytest

import mplog
from tests import workload
from tests.conftest import file_handler, fork_running, wait_pid

_MPLOG_DIR = os.path.dirname(mplog.__file__)
# The functions that write frames to the pipe (mplog/_pipewrite.py,
# mplog/_queue.py): a signal handler may raise anywhere in them, on any Python.
_WRITES = {"_send_locked", "_send_held", "_write_out", "_complete_write", "_finish", "_flush", "_flush_locked"}
# Before 3.11, CPython does not run signal handlers before these opcodes (so
# that the block they set up is in place before anything can raise).
_NO_SIGNAL_BEFORE = {"SETUP_FINALLY", "SETUP_WITH", "BEFORE_ASYNC_WITH", "YIELD_FROM"}
# The events of a bytecode about to run; on 3.12+ also of a line (there a
# frame run by a signal handler gets no opcode events).
_EVENTS = ("opcode", "line") if sys.version_info >= (3, 12) else ("opcode",)
# One record that fits in an atomic write, one that does not.
_SIZES = (100, 5000)
_ACTIONS = ("raise", "log", "log and raise")
_LOGGER = logging.getLogger(workload.LOGGER)


def _signal_may_run_before(frame: FrameType) -> bool:
    if sys.version_info >= (3, 11):
        return True  # a stricter sweep than signals: they run only at calls and jumps there
    import dis

    return dis.opname[frame.f_code.co_code[frame.f_lasti]] not in _NO_SIGNAL_BEFORE


class _Handler:
    """A trace function standing in for a signal handler that runs once,
    before the ``at``-th bytecode run in mplog's write functions, and then
    does ``action``: logs a record as worker 1 (numbered from ``logged``),
    raises KeyboardInterrupt, or both."""

    def __init__(self, at: int, action: str, logged: List[int], functions: Set[str] = _WRITES) -> None:
        self.at, self.action, self.logged, self.functions = at, action, logged, functions
        self.seen = 0
        self.ran = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Optional[Callable[..., Any]]:
        code = frame.f_code
        if code.co_name in self.functions and code.co_filename.startswith(_MPLOG_DIR):
            frame.f_trace_opcodes = True
            return self._opcode
        return None

    def _opcode(self, frame: FrameType, event: str, arg: Any) -> Optional[Callable[..., Any]]:
        if event not in _EVENTS or self.ran or not _signal_may_run_before(frame):
            return self._opcode
        self.seen += 1
        if self.seen < self.at:
            return self._opcode
        self.ran = True
        if "log" in self.action:
            seq = len(self.logged)
            _LOGGER.info("%s", workload.message(1, seq, _SIZES[seq % 2]))
            self.logged.append(seq)
        if "raise" in self.action:
            raise KeyboardInterrupt
        return self._opcode


def _log_under_every_interruption(result_path: str, buffered: bool) -> None:
    """Log as worker 0, each call with a handler run at its next bytecode
    (``at`` = 1, 2, ...) until a call ends before reaching it, for every
    action and size; in buffered mode each call is followed by a flush, in
    the same interrupted stretch. Write which calls returned, and how many
    records the handlers logged, to ``result_path``."""
    returned: List[int] = []
    logged: List[int] = []
    seq = 0
    for action in _ACTIONS:
        for size in _SIZES:
            at = 1
            while True:
                handler = _Handler(at, action, logged)
                sys.settrace(handler)
                try:
                    _LOGGER.info("%s", workload.message(0, seq, size))
                    returned.append(seq)
                    if buffered:
                        mplog.flush()
                except KeyboardInterrupt:
                    pass
                finally:
                    sys.settrace(None)
                seq += 1
                if not handler.ran:
                    break
                at += 1
    mplog.flush()
    with open(result_path, "w") as out:
        json.dump({"calls": seq, "returned": returned, "logged": len(logged)}, out)


@pytest.mark.parametrize("buffered", [False, True])
def test_a_handler_at_any_bytecode_of_a_write_loses_and_tears_nothing(tmp_path, log_path, capfd, buffered):
    """A forked worker logs under a handler that runs at one bytecode of its
    write, each place in turn: it raises KeyboardInterrupt, logs a record,
    or logs and raises. Every call that returned, and every record the
    handlers logged, is in the file once; a call that raised is there at
    most once; nothing is torn and nothing goes to stderr."""
    result_path = str(tmp_path / "result.json")
    handler = file_handler(log_path)
    with mplog.setup(handler, level="INFO", buffered=buffered, flush_interval=60 if buffered else None):
        assert wait_pid(fork_running(_log_under_every_interruption, result_path, buffered), 120) == 0
    with open(result_path) as stream:
        result = json.load(stream)
    tally = workload.tally(log_path)
    assert not tally.torn, f"{len(tally.torn)} torn lines, e.g. {tally.torn[0][:200]!r}"
    assert not tally.duplicated(), tally.duplicated()[:10]
    missing = tally.missing(0, result["returned"])
    assert not missing, f"{len(missing)} of {len(result['returned'])} calls that returned are missing: {missing[:20]}"
    assert not tally.missing(1, range(result["logged"])), "records logged by the handlers are missing"
    assert result["calls"] > 10 * len(_ACTIONS) * len(_SIZES)  # the sweep went through the writes
    assert "mplog:" not in capfd.readouterr().err


def _bytecodes_after_a_signal() -> None:
    """Where the handler of a signal just sent runs, on 3.12+ (at a call or
    a jump back, not right after ``os.kill``)."""
    for _ in range(2):
        pass


def _terminate_twice(at: int, survived_path: str) -> None:
    """Log record 0; take a SIGTERM whose handler (mplog's, buffered) is
    interrupted at its ``at``-th bytecode by a KeyboardInterrupt; if that
    leaves this process alive, say so (create ``survived_path``), log record
    1, and take another."""
    _LOGGER.info("%s", workload.message(0, 0, 100))
    handler = _Handler(at, "raise", [], {"_terminate"})
    sys.settrace(handler)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        _bytecodes_after_a_signal()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    with open(survived_path, "w"):
        pass
    _LOGGER.info("%s", workload.message(0, 1, 100))
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_ends_a_buffered_worker_after_its_handler_was_cut_short_anywhere(tmp_path, log_path):
    """A buffered worker's SIGTERM handler (flush, then die of the signal)
    raises KeyboardInterrupt at one of its bytecodes, each place in turn in a
    worker of its own. The next SIGTERM still ends the worker, and every
    record it logged is in the file."""
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=60):
        at = 0
        while True:
            at += 1
            survived_path = str(tmp_path / f"survived-{at}")
            with open(log_path, "w"):
                pass  # each worker's records alone
            status = wait_pid(fork_running(_terminate_twice, at, survived_path), 60)
            mplog.complete()
            assert status == -signal.SIGTERM, f"interrupted at bytecode {at}: exit status {status}"
            survived = os.path.exists(survived_path)  # else: the handler ended before bytecode ``at``
            logged = 2 if survived else 1
            assert not workload.tally(log_path).missing(0, range(logged)), f"interrupted at bytecode {at}"
            if not survived:
                break
    assert at > 5  # the sweep went through the handler
