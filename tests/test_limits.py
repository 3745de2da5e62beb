"""Resource limits and malformed input: a listener out of file descriptors
turns workers away until it can take their pipes whole, and no frame, however
malformed or large, takes the listener's memory or its life."""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import multiprocessing
import os
import re
import resource
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mplog
from mplog import _codec, _lanes, _server
from mplog._hello import connect
from tests import workload
from tests.conftest import (
    Collect,
    file_handler,
    fork_running,
    killed_on_error,
    run_in_child,
    wait_for_path,
    wait_pid,
    wait_until,
)

# The reproducer: a listener process limited to 64 descriptors, and
# more workers than that released at once, each logging 1,000 records.
FD_LIMIT = 64
WORKERS = 80
RECORDS = 1000
STDERR_RECORD = re.compile(r"w=(\d+) seq=(\d+) size=")


def _stderr_records(path: str) -> list:
    """The workload records that went to stderr (after the fallback's prefix)."""
    with open(path, encoding="utf-8", errors="replace") as stream:
        return [match.groups() for match in map(STDERR_RECORD.search, stream) if match]


def _to_stderr_file(path: str) -> None:
    """Send this process's stderr, and its children's, to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - stays open for the process's life


def _released_worker(worker: int, go_r: int, go_w: int) -> None:
    """Wait until every worker has been forked, then log."""
    os.close(go_w)
    os.read(go_r, 1)  # EOF once the parent closes its end: all start together
    workload.log_records(worker, RECORDS)


def _own_listener_at_fd_limit(log_path: str, err_path: str, listener: str) -> int:
    """In a forked child: limit it to FD_LIMIT descriptors (hard limit too, so
    the listener cannot raise it), start mplog, fork WORKERS workers and
    release them together. 0 if every worker exited cleanly."""
    _to_stderr_file(err_path)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    with mplog.setup(file_handler(log_path), level="INFO", listener=listener):
        go_r, go_w = os.pipe()  # after the listener process forked: it must not hold the write end
        pids = [fork_running(_released_worker, worker, go_r, go_w) for worker in range(WORKERS)]
        os.close(go_w)
        os.close(go_r)
        codes = [wait_pid(pid, 120) for pid in pids]
    return 0 if codes == [0] * WORKERS else 2


@pytest.mark.parametrize("listener", ["thread", "process"])
def test_a_listener_out_of_descriptors_loses_no_record(tmp_path, listener):
    """80 workers start logging at once at a listener limited to 64 open files:
    it cannot hold every pipe at once, so it turns workers away until a
    descriptor is free, and each retries; every record reaches the file, none
    goes to stderr or nowhere."""
    log_path, err_path = str(tmp_path / "app.log"), str(tmp_path / "stderr")
    assert run_in_child(_own_listener_at_fd_limit, log_path, err_path, listener, timeout=180) == 0
    on_stderr = set(_stderr_records(err_path))
    tally = workload.tally(log_path)
    in_file = {(str(w), str(s)) for w, seqs in tally.seqs.items() for s in seqs}
    nowhere = WORKERS * RECORDS - len(in_file | on_stderr)
    assert not on_stderr and not nowhere, f"{len(on_stderr)} records went to stderr, {nowhere} nowhere"
    tally.assert_complete({worker: RECORDS for worker in range(WORKERS)})
    # The premise: the limit was reached, and the listener said so in the log.
    assert any("descriptors" in line for line in tally.other), tally.other[-5:]


def _soft_open_files(pid: int) -> int:
    """The soft RLIMIT_NOFILE of process ``pid``, from /proc."""
    with open(f"/proc/{pid}/limits") as limits:
        return next(int(line.split()[3]) for line in limits if line.startswith("Max open files"))


def _limits_after_setup(listener: str) -> int:
    """In a forked child with a soft limit of 64 under a hard one of 4096:
    0 if the listener's process has 4096 after setup, and (listener process)
    the parent still 64; 3 if not."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, 4096))
    with mplog.setup(Collect(), listener=listener) as session:
        pid = session.listener._process_pid or os.getpid()
        raised = _soft_open_files(pid) == 4096
        parent = resource.getrlimit(resource.RLIMIT_NOFILE)[0] == (4096 if listener == "thread" else FD_LIMIT)
    return 0 if raised and parent else 3


@pytest.mark.parametrize("listener", ["thread", "process"])
def test_the_listener_raises_its_soft_descriptor_limit_to_the_hard_one(listener):
    """The listener's process gets as many descriptors as it may (with a
    listener process, the parent keeps its own limit)."""
    assert run_in_child(_limits_after_setup, listener) == 0


# A marshal payload that claims far more items than it holds: marshal builds
# the container (2**31 - 1 pointers, 16 GiB, filled) before it reads an item.
def _claiming(code: bytes, count: int = 2**31 - 1) -> bytes:
    return code + struct.pack("<i", count) + b"N" * 7


LIES = {
    "tuple": _claiming(b"("),
    "list": _claiming(b"["),
    "tuple, FLAG_REF": _claiming(b"\xa8"),
    "list, FLAG_REF": _claiming(b"\xdb"),
    # Inside a record's frame: the extras dict holds the lie.
    "in the extras": marshal.dumps((0, 1.5, None, {"k": None}, None), 4).replace(b"N0", _claiming(b"[")[:5] + b"N0"),
}


def _frame(payload: bytes) -> bytes:
    return _codec.HEADER.pack(_codec.RECORD_START, len(payload)) + payload


# Malformed in other ways: each must raise ValueError too (and the walk that
# checks the counts must neither go back nor stop short on them).
MALFORMED = {
    "a negative length": b"s" + struct.pack("<i", -5) + b"xxxxx(",
    "a negative count": b"(" + struct.pack("<i", -1),
    "a count cut short": b"[\x01\x00",
    "a code object": b"c" + bytes(40) + b"(",
}

# The address space of the children that decode lies: enough for Python and
# mplog, far from enough for a lie's container.
ADDRESS_SPACE = 2 * 1024**3


def _decode_lies() -> int:
    """In a forked child whose address space is capped (so that the old decoder
    fails at once instead of filling gigabytes): 0 if every lie raises
    ValueError naming the count, and every other malformed payload raises
    ValueError; 3 if one does not."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, resource.RLIM_INFINITY))
    for name, payload in {**LIES, **MALFORMED}.items():
        try:
            _codec.decode(payload)
        except ValueError as exc:
            if name in LIES and "items or bytes with" not in str(exc):
                print(f"{name}: {exc}")
                return 3
        except BaseException as exc:  # MemoryError, before
            print(f"{name}: {type(exc).__name__}: {exc}")
            return 3
        else:
            return 3
    return 0


def test_a_payload_claiming_more_items_than_it_holds_is_refused_before_marshal_builds_them():
    """A 12-byte payload claiming 2**31 - 1 items, as a tuple or list, flagged
    or not, alone or inside a record: ValueError, without allocating them; and
    ValueError for other malformed payloads."""
    assert run_in_child(_decode_lies, timeout=60) == 0


plain_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
    | st.just(Ellipsis),
    lambda children: (
        st.lists(children)
        | st.lists(children, min_size=256, max_size=300).map(tuple)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=5), children, max_size=5)
        | st.frozensets(st.integers() | st.text(), max_size=5)
        | st.sets(st.integers(), max_size=5)
    ),
    max_leaves=400,
)
_EXTRA_KEYS = st.text(max_size=10).filter(lambda key: key not in _codec.STANDARD_ATTRIBUTES | {"shared", "counted"})
# A list every frame below carries, whose count the test then raises.
_COUNTED = list(range(1000, 1300))
_COUNT = struct.pack("<i", len(_COUNTED))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(extras=st.dictionaries(_EXTRA_KEYS, plain_data, max_size=4), texts=st.lists(st.text() | st.none()))
def _frames_decode_until_a_count_is_raised(extras, texts):
    """A frame of any plain data decodes to that data (every type marshal
    writes, shared references, containers of every size); the same frame with
    one list's count raised past what it holds is refused."""
    shared = ["shared"] * 3  # written once, then referred back to
    fields = {"msg": "m", "message": "m", "args": None, "shared": shared, "counted": _COUNTED}
    record = logging.makeLogRecord({**fields, **extras})
    payload = _codec.encode(record, texts, route=3)[_codec.HEADER.size :]
    route, _, decoded, got_texts = _codec.decode(payload)
    assert (route, got_texts) == (3, tuple(texts))
    assert decoded is not None and (decoded.shared, decoded.counted) == (shared, _COUNTED)
    assert {key: vars(decoded)[key] for key in extras} == extras
    at = max(payload.rfind(b"[" + _COUNT), payload.rfind(b"\xdb" + _COUNT)) + 1  # with FLAG_REF, or not
    raised = payload[:at] + struct.pack("<i", 2**31 - 1) + payload[at + 4 :]
    with pytest.raises(ValueError, match="claims 2147483647 items"):
        _codec.decode(raised)


def _check_frames_in_capped_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, resource.RLIM_INFINITY))
    _frames_decode_until_a_count_is_raised()


def test_every_frame_decodes_and_a_raised_count_is_refused():
    """The property above (hypothesis), in a child whose address space is capped."""
    assert run_in_child(_check_frames_in_capped_child, timeout=300) == 0


def _log_around_lies(log_path: str, listener: str) -> int:
    """In a forked child with a capped address space: a worker logs 150
    records, a raw connection sends every lie and then a good record, the
    worker logs 150 more. 0 if the worker exited cleanly."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, resource.RLIM_INFINITY))
    with mplog.setup(file_handler(log_path), level="INFO", listener=listener) as session:
        sent = log_path + ".sent"
        worker = fork_running(_log_before_and_after, sent)
        raw = mplog.Queue(session.queue.address)
        for payload in LIES.values():
            raw._send(_frame(payload))
        after = logging.LogRecord("raw", logging.INFO, __file__, 1, "%s", (workload.message(1, 0, 10),), None)
        raw._send(_codec.encode(after, [workload.message(1, 0, 10)]))
        raw.close()
        open(sent, "w").close()
        return wait_pid(worker, 60)


def _log_before_and_after(sent: str) -> None:
    workload.log_records(0, 150)
    wait_for_path(sent)
    workload.log_records(0, 150, start=150)


@pytest.mark.parametrize("listener", ["thread", "process"])
def test_malformed_frames_are_dropped_and_the_listener_lives_on(tmp_path, listener):
    """Frames claiming 2**31 - 1 items on a raw connection: each is dropped and
    reported; the listener goes on, the connection too, and every record of a
    worker logging before and after them reaches the file."""
    log_path = str(tmp_path / "app.log")
    assert run_in_child(_log_around_lies, log_path, listener, timeout=120) == 0
    tally = workload.tally(log_path)
    tally.assert_complete({0: 300, 1: 1})
    dropped = [line for line in tally.other if "dropped a frame" in line and "items or bytes with" in line]
    assert len(dropped) == len(LIES), tally.other


# The second reproducer: pipes each holding most of a 60 MiB record
# that never arrives whole. Five of them are more than PENDING_LIMIT.
STALLED_WRITERS = 5
STALLED_SIZE = 60 * 1024 * 1024
_CHUNK = 1024 * 1024


def _peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def _stalled_writer(address: str, worker: int, state_dir: str, release: str) -> None:
    """Send all of a 60 MiB line's text frame but its end, say how that went
    (``held``, or ``refused`` if the listener closed the pipe), wait for
    ``release``, then send the end, and say again."""
    queue = _RawPipe(address)
    # workload.message(worker, 0, STALLED_SIZE), a piece at a time
    text = workload.message(worker, 0, 0).replace("size=0", f"size={STALLED_SIZE}").encode()
    letter = workload.message(worker, 0, 1)[-1].encode()
    state = "held"
    try:
        queue.send(text)
        for _ in range(STALLED_SIZE // _CHUNK):
            queue.send(letter * _CHUNK)  # the line, 1 MiB at a time: the frame is one write or many
    except BrokenPipeError:
        state = "refused"
    _say(state_dir, worker, state)
    wait_for_path(release)
    if state == "held":
        try:
            queue.send(b"\n" + _codec.TEXT_END)
        except BrokenPipeError:  # the listener closed it after the write returned
            state = "refused"
    _say(state_dir, worker, state + " at the end")


def _say(state_dir: str, worker: int, state: str) -> None:
    path = os.path.join(state_dir, str(worker))
    with open(path + ".tmp", "w") as out:
        out.write(state)
    os.rename(path + ".tmp", path)


def _said(state_dir: str, worker: int) -> str:
    try:
        with open(os.path.join(state_dir, str(worker))) as said:
            return said.read()
    except FileNotFoundError:
        return ""


def test_memory_for_incomplete_frames_is_capped(tmp_path):
    """Five pipes each hold a 60 MiB line that has not arrived whole: the
    listener holds at most PENDING_LIMIT of them (and one more record while it
    closes a pipe), closing the pipes holding the most (each writer gets EPIPE:
    a worker's handler then writes the record to its stderr), and says so;
    meanwhile it logs another worker's records, and the lines it kept reach the
    file whole once they end. The session runs in a freshly spawned
    interpreter, so that the listener it forks starts the same every time."""
    directory = str(tmp_path)
    child = multiprocessing.get_context("spawn").Process(target=_hold_incomplete_frames, args=(directory,))
    child.start()
    child.join(240)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 0, f"the session's process failed ({child.exitcode})"
    with open(os.path.join(directory, "measured.json")) as measured:
        growth, codes = json.load(measured)
    print(f"the listener grew by {growth / MiB:.1f} MiB")
    assert codes == [0] * STALLED_WRITERS
    # Over the limit, the listener reads the pipe it closes to its end (to miss
    # no write that returned): up to one more record. It sheds once a wake-up's
    # reads are parsed (one read per pipe), and a handler's lane holds its
    # backlog. And its own memory (two threads, the allocator's slack): 64 MiB.
    # Forked from pytest late in the full suite (which had freed large blocks,
    # so glibc served big bytearrays from its heap, where growing one may copy
    # it), 229 and 235.7 MiB were seen; forked from a fresh interpreter, as
    # now, 129-162 MiB. Uncapped, the five lines alone would be 300 MiB.
    limit = (
        _server.PENDING_LIMIT
        + _codec.MAX_PAYLOAD
        + STALLED_WRITERS * _server.RECV_SIZE
        + _lanes.BACKLOG_BYTES
        + 64 * 1024 * 1024
    )
    assert growth <= limit, f"the listener's memory grew by {growth >> 20} MiB (bound {limit >> 20} MiB)"
    states = os.path.join(directory, "states")
    final = {w: _said(states, w) for w in range(STALLED_WRITERS)}
    kept = [w for w, state in final.items() if state == "held at the end"]
    refused = [w for w, state in final.items() if state.startswith("refused")]
    assert len(kept) + len(refused) == STALLED_WRITERS and kept and refused, final
    tally = workload.tally(os.path.join(directory, "app.log"))
    tally.assert_complete({100: 1, 101: 200, **{w: 1 for w in kept}})
    notices = [line for line in tally.other if "over its limit of" in line]
    assert len(notices) == len(refused), notices


def _hold_incomplete_frames(directory: str) -> None:
    """The test's session, in a spawned process: measure the listener's
    growth while the stalled writers hold their lines, release them, and
    write the growth and the writers' exit codes to ``measured.json``."""
    log_path, states, release = (os.path.join(directory, name) for name in ("app.log", "states", "release"))
    os.mkdir(states)
    with mplog.setup(file_handler(log_path), level="INFO", listener="process") as session:
        listener = session.listener._process_pid
        workload.log_records(100, 1)  # the listener is warm: its peak so far is its own
        baseline = _peak_rss_bytes(listener)
        writers: list = []
        with contextlib.ExitStack() as writers_killed_on_error:
            for worker in range(STALLED_WRITERS):
                pid = fork_running(_stalled_writer, session.queue.address, worker, states, release)
                writers_killed_on_error.enter_context(killed_on_error(pid))
                writers.append(pid)
            wait_until(lambda: all(_said(states, w) for w in range(STALLED_WRITERS)), "every writer's state", 120)
            growth = _peak_rss_bytes(listener) - baseline
            assert run_in_child(workload.log_records, 101, 200) == 0  # the listener still logs
            open(release, "w").close()
            codes = [wait_pid(pid, 120) for pid in writers]
    with open(os.path.join(directory, "measured.json"), "w") as measured:
        json.dump([growth, codes], measured)


MiB = 1024 * 1024


class _RawPipe:
    """A pipe to the listener, written as it is: a worker's queue would put
    a mark (the time) before each write, which a frame sent in pieces, as
    here, cannot have between its pieces."""

    def __init__(self, address: str) -> None:
        self.pipe = connect(address, 0)

    def send(self, data: bytes) -> None:
        """Write all of ``data``.

        Raises:
            BrokenPipeError: the listener closed the pipe.
        """
        with memoryview(data) as view:
            while view:
                view = view[os.write(self.pipe, view) :]


class _Line:
    """One workload record sent by hand as a text frame on a pipe of its own,
    in pieces; ``held`` counts the bytes sent of it, which the listener holds
    until the line ends."""

    def __init__(self, address: str, worker: int, size: int) -> None:
        self.queue = _RawPipe(address)
        self.size = size
        self.letter = workload.message(worker, 0, 1)[-1].encode()
        self.sent = 0  # of the letters
        head = workload.message(worker, 0, 0).replace("size=0", f"size={size}").encode()
        self.queue.send(head)
        self.held = len(head)

    def send(self, count: int) -> None:
        """Send ``count`` more letters of the line, a MiB at a time."""
        while count:
            piece = min(count, MiB)
            self.queue.send(self.letter * piece)
            self.sent, self.held, count = self.sent + piece, self.held + piece, count - piece

    def end(self, then: bytes = b"") -> None:
        """Send the rest of the line, its end, and ``then``."""
        self.send(self.size - self.sent)
        self.queue.send(b"\n" + _codec.TEXT_END + then)


def test_the_cap_never_drops_a_record_whose_write_returned(log_path):
    """The listener holds just under PENDING_LIMIT of three unfinished lines,
    the largest of them written to its end (the write returned) but not yet
    read, and the next read puts it over: it reads on rather than closing
    that pipe, and the line arrives. A fourth line then takes it over the
    limit for good: that one, still being written, is closed; its writer
    gets EPIPE."""
    with mplog.setup(file_handler(log_path), level="INFO") as session:
        server = session.listener._server
        address = session.queue.address
        done = _Line(address, 0, 62 * MiB)  # the largest, its end to come
        growing = _Line(address, 1, 60 * MiB)
        third = _Line(address, 2, 64 * MiB)
        done.send(done.size - 16 * 1024)
        growing.send(40 * MiB)
        third.send(_server.PENDING_LIMIT - 32 * 1024 - done.held - growing.held - third.held)
        wait_until(lambda: server._pending + 32 * 1024 == _server.PENDING_LIMIT, "the listener holding it all")
        with session.listener._busy:  # the listener reads nothing: the next two writes wait in their pipes
            growing.send(48 * 1024)  # read first (ready first): this read takes it over the limit
            done.end(then=_codec.text_frames([workload.message(0, 1, 10) + "\n"], "strict"))
        wait_until(lambda: server._pending < _server.PENDING_LIMIT, "the finished line read")
        fourth = _Line(address, 3, 64 * MiB)
        try:
            fourth.send(fourth.size)  # takes it over the limit: closed while being written, or before its end
            wait_until(lambda: server._pending < _server.PENDING_LIMIT, "the fourth line dropped")
            fourth.end()
        except BrokenPipeError:
            pass
        else:
            pytest.fail("the fourth line's writer never got EPIPE")
        growing.end()
        third.end()
    tally = workload.tally(log_path)
    tally.assert_complete({0: 2, 1: 1, 2: 1})
    notices = [line for line in tally.other if "over its limit of" in line]
    assert len(notices) == 1 and "pid" in notices[0], tally.other
