"""What the listener's handlers see: tracebacks rendered by their own
formatters, as a handler with that formatter writes them in one process, and
the records they log themselves, handled like everyone else's, without
endless recursion, whichever listener runs them."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from collections import defaultdict
from typing import Dict, List, Tuple

import pytest

import mplog
from tests.conftest import file_handler, join_all

RECORDS = 12  # per process: each kind below twice
FORMAT = "@@ %(levelname)s %(message)s"  # "@@ " starts each record, whatever lines its traceback spans
RECORD = re.compile(r"^@@ \w+ w=(\d+) seq=(\d+) ", re.M)


class OwnFormatter(logging.Formatter):
    """Renders tracebacks and stacks its own way, around the stock text."""

    def formatException(self, ei):  # noqa: N802
        return "EXC<" + super().formatException(ei).replace("\n", " | ") + ">"

    def formatStack(self, stack_info):  # noqa: N802
        return "STACK<" + stack_info.replace("\n", " / ") + ">"


class ShortFormatter(logging.Formatter):
    """Renders a traceback from the exception alone, without the stock text."""

    def formatException(self, ei):  # noqa: N802
        return f"{ei[0].__name__}: {ei[1]} (raised at line {ei[2].tb_lineno})"


FORMATTERS = {"own": OwnFormatter, "short": ShortFormatter, "stock": logging.Formatter}


def _log_kinds(logger: logging.Logger, worker: int) -> None:
    """Log RECORDS records of every kind: tracebacks (chained too), stacks, both, neither."""
    for seq in range(RECORDS):
        kind = seq % 6
        try:
            if kind == 0:
                raise ValueError(f"bad value {seq}")
            if kind == 1:
                try:
                    {}["missing"]
                except KeyError as exc:
                    raise RuntimeError("while looking up") from exc
        except Exception:
            logger.exception("w=%d seq=%d failed", worker, seq, stack_info=seq >= 6)
            continue
        logger.warning("w=%d seq=%d fine", worker, seq, stack_info=kind in (2, 3))


def _log_everywhere(directory: str, worker: int, kinds: Tuple[str, ...]) -> None:
    """Log the records through mplog, then the same records again (same
    lines of code, same stack) through one plain FileHandler per formatter,
    each on a logger of its own: what one process writes with that formatter."""
    loggers = [logging.getLogger("shipped")]
    for kind in kinds:
        reference = logging.getLogger(f"reference.{worker}.{kind}")
        reference.propagate = False
        handler = file_handler(os.path.join(directory, f"reference-{worker}-{kind}.log"), FORMAT)
        handler.setFormatter(FORMATTERS[kind](FORMAT))
        reference.handlers[:] = [handler]
        loggers.append(reference)
    for logger in loggers:
        _log_kinds(logger, worker)
    for logger in loggers[1:]:
        logger.handlers[0].close()


def _spawned(initializer, directory: str, worker: int, kinds: Tuple[str, ...]) -> None:
    initializer()
    _log_everywhere(directory, worker, kinds)


def _by_worker(text: str) -> Dict[int, List[str]]:
    """Each worker's records in order, each with every line it spans."""
    starts = [match.start() for match in RECORD.finditer(text)]
    assert text[: starts[0] if starts else len(text)] == "", "text before the first record"
    chunks = [text[start:end] for start, end in zip(starts, starts[1:] + [len(text)])]
    records: Dict[int, List[str]] = defaultdict(list)
    for chunk in chunks:
        records[int(RECORD.match(chunk).group(1))].append(chunk)
    return records


@pytest.mark.parametrize("runner", ["thread", "process"])
@pytest.mark.parametrize("kinds", [("own",), ("own", "short", "stock")], ids=["one handler", "three handlers"])
def test_each_handler_writes_tracebacks_as_its_own_formatter_does(tmp_path, runner, kinds):
    """Records with tracebacks and stacks from the parent, a fork and a spawn
    worker: each listener file's bytes are, worker by worker, those a plain
    FileHandler with the same formatter writes in one process for the same records."""
    directory = str(tmp_path)
    handlers = []
    for kind in kinds:
        handler = file_handler(os.path.join(directory, f"{kind}.log"), FORMAT)
        handler.setFormatter(FORMATTERS[kind](FORMAT))
        handlers.append(handler)
    with mplog.setup(*handlers, listener=runner):
        _log_everywhere(directory, 0, kinds)
        workers = [
            multiprocessing.get_context("fork").Process(target=_log_everywhere, args=(directory, 1, kinds)),
            multiprocessing.get_context("spawn").Process(
                target=_spawned, args=(mplog.initializer, directory, 2, kinds)
            ),
        ]
        for process in workers:
            process.start()
        join_all(workers)
    for kind in kinds:
        with open(os.path.join(directory, f"{kind}.log"), encoding="utf-8") as file:
            written = _by_worker(file.read())
        assert sorted(written) == [0, 1, 2], kind
        for worker in range(3):
            with open(os.path.join(directory, f"reference-{worker}-{kind}.log"), encoding="utf-8") as file:
                expected = _by_worker(file.read())[worker]
            assert len(expected) == RECORDS
            assert written[worker] == expected, f"{kind} formatter, worker {worker}"
    with open(os.path.join(directory, "own.log"), encoding="utf-8") as file:
        own = file.read()
    assert own.count("EXC<Traceback") == 3 * 4 and own.count("STACK<Stack") == 3 * 6  # the premise: both kinds


def _unpicklable_formatter() -> logging.Formatter:
    class Local(logging.Formatter):  # a class defined in a function cannot be pickled
        def formatException(self, ei):  # noqa: N802
            return "LOCAL " + super().formatException(ei)

    return Local(FORMAT)


def test_a_formatter_a_spawned_worker_cannot_get_costs_only_its_tracebacks(tmp_path, capfd):
    """The formatter cannot be pickled: the spawned worker still starts and
    logs every record, the parent's tracebacks are the formatter's, the
    worker's the stock ones, and stderr says why, once for two workers."""
    directory = str(tmp_path)
    handler = file_handler(os.path.join(directory, "local.log"), FORMAT)
    handler.setFormatter(_unpicklable_formatter())
    with mplog.setup(handler):
        _log_kinds(logging.getLogger("shipped"), 0)
        workers = [
            multiprocessing.get_context("spawn").Process(target=_spawned, args=(mplog.initializer, directory, w, ()))
            for w in (1, 2)
        ]
        for process in workers:
            process.start()
        join_all(workers)
    with open(os.path.join(directory, "local.log"), encoding="utf-8") as file:
        written = _by_worker(file.read())
    assert {worker: len(records) for worker, records in written.items()} == {0: RECORDS, 1: RECORDS, 2: RECORDS}
    tracebacks = [record for records in written.values() for record in records if "Traceback" in record]
    assert len(tracebacks) == 3 * 4
    assert [record.split(" ")[2] for record in tracebacks if "\nLOCAL Traceback" in record] == ["w=0"] * 4
    err = capfd.readouterr().err
    assert err.count("cannot be pickled") == 1, err
    assert "spawned workers render its handler's tracebacks as logging.Formatter does" in err


# --- handlers that log ---------------------------------------------------

ECHO_COUNT = 50  # records per process


class Echo(logging.Handler):
    """Logs a record of its own for each record it handles: for every one
    (``always``), or only for those that are not its own."""

    def __init__(self, always: bool) -> None:
        super().__init__()
        self.always = always

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.always or not message.startswith("echo "):
            logging.getLogger("echo").info("echo %s", message)


def _log_numbered(worker: int) -> None:
    for seq in range(ECHO_COUNT):
        logging.getLogger("app").info("w=%d seq=%d", worker, seq)


@pytest.mark.parametrize("runner", ["thread", "process"])
@pytest.mark.parametrize("always", [False, True], ids=["echoes others", "echoes everything"])
def test_records_a_handler_logs_reach_the_handlers_once(tmp_path, capfd, runner, always):
    """A handler that logs from emit, beside a file, with either listener: each
    of its records lands in the file once, after the record that caused it and
    in the order of their causes, for the parent's and a fork worker's records
    alike. One that logs for
    its own records too stops there: what it logs for an echo is on stderr,
    once each, after one notice; nothing recurses, nothing else is on stderr."""
    path = str(tmp_path / "app.log")
    with mplog.setup(file_handler(path, "%(name)s %(message)s"), Echo(always), level="INFO", listener=runner):
        _log_numbered(0)
        worker = multiprocessing.get_context("fork").Process(target=_log_numbered, args=(1,))
        worker.start()
        join_all([worker])
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    sent = [f"w={w} seq={seq}" for w in (0, 1) for seq in range(ECHO_COUNT)]
    expected = sorted([f"app {m}" for m in sent] + [f"echo echo {m}" for m in sent])
    assert sorted(lines) == expected
    position = {line: index for index, line in enumerate(lines)}
    for message in sent:
        assert position[f"app {message}"] < position[f"echo echo {message}"], message
    for worker in (0, 1):
        echoes = [line for line in lines if line.startswith(f"echo echo w={worker} ")]
        assert echoes == [f"echo echo w={worker} seq={seq}" for seq in range(ECHO_COUNT)]
    err = capfd.readouterr().err.splitlines()
    if not always:
        assert err == []
        return
    assert err[0].startswith("mplog: a handler logged while the handlers handled a record that a handler had logged")
    assert [line for line in err[1:] if " INFO echo: " not in line] == [], err
    deeper = [line.split(" INFO echo: ")[1] for line in err[1:]]
    assert sorted(deeper) == sorted(f"echo echo {m}" for m in sent), err[:5]


def _log_a_lone_surrogate() -> None:
    for number in range(5):
        logging.getLogger("surrogate").warning("line %d%s", number, "\udc80" if number == 2 else "")


def test_a_line_a_stream_cannot_encode_costs_only_that_line(tmp_path, capfd):
    """Two plain file handlers (the listener writes lines the worker
    formatted to each), and a worker's third of five records holds a lone
    surrogate, which the files' UTF-8 cannot encode: as with the stdlib's own
    handlers, only that line is lost, and said; the other four are in both
    files."""
    paths = [str(tmp_path / "a.log"), str(tmp_path / "b.log")]
    with mplog.setup(*(file_handler(path, "%(message)s") for path in paths), level="INFO"):
        worker = multiprocessing.get_context("fork").Process(target=_log_a_lone_surrogate)
        worker.start()
        join_all([worker])
    for path in paths:
        with open(path, encoding="utf-8") as file:
            assert file.read().splitlines() == ["line 0", "line 1", "line 3", "line 4"], path
    assert "cannot encode was not written" in capfd.readouterr().err
