"""The journal of ``mplog serve`` and the taking back of what a killed server
wrote after it, on real files: a live file cut back, files rotated since
found by inode and removed, a stdlib ``RotatingFileHandler``'s backups
renumbered, and a journal rewritten as one line keeping what is still needed."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path
from typing import Dict, List

import mplog
import mplog._journal
from mplog._journal import Journal, _Mark, _read
from mplog._lanes import Lane
from mplog._takeback import file_state


def _commit(journal: Journal, handlers: List[logging.Handler], positions: Dict[int, int]) -> None:
    """Pass a mark down real lanes of ``handlers``; return once they have all
    passed it (the last one has then committed it)."""
    lanes = {handler: Lane(repr(handler), 10.0, lambda _: None) for handler in handlers}
    journal.mark(lanes, positions, now=True)
    for lane in lanes.values():
        lane.stop()
        assert lane.join(5.0)


def test_a_killed_server_s_tail_is_cut_and_its_streams_offsets_kept(tmp_path: Path) -> None:
    """Lines written after the last commit are cut from the live file; the
    streams' committed offsets come back."""
    log = tmp_path / "app.log"
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    journal = Journal(str(tmp_path / "serve.sock.journal"))
    assert journal.recover([handler]) == []
    handler.emit(logging.makeLogRecord({"msg": "committed"}))
    _commit(journal, [handler], {7: 100, 8: 50})
    handler.emit(logging.makeLogRecord({"msg": "after the commit"}))
    # Killed: nothing closes the journal. The next server:
    again = Journal(journal.path)
    notices = again.recover([handler])
    assert log.read_text() == "committed\n"
    assert (again.committed(7), again.committed(8), again.committed(9)) == (100, 50, 0)
    assert notices and "took back" in notices[0]
    handler.close()
    again.close()
    assert not os.path.exists(journal.path)  # a clean stop removes it


def test_rotated_since_the_commit_are_removed_and_backups_renumbered(tmp_path: Path) -> None:
    """The file live at the commit, rotated twice since, is found as app.log.2,
    cut back and renamed app.log.1; app.log.1 (made after the commit) goes,
    the live file is emptied; an older backup keeps its lines."""
    log = tmp_path / "app.log"
    handler = logging.handlers.RotatingFileHandler(log, maxBytes=10**9, backupCount=10)
    handler.setFormatter(logging.Formatter("%(message)s"))
    journal = Journal(str(tmp_path / "j"))
    journal.recover([handler])
    handler.emit(logging.makeLogRecord({"msg": "old"}))
    handler.doRollover()
    handler.emit(logging.makeLogRecord({"msg": "committed"}))
    _commit(journal, [handler], {1: 10})
    for line in ("after 1", "after 2", "after 3"):
        handler.emit(logging.makeLogRecord({"msg": line}))
        handler.doRollover()
    handler.emit(logging.makeLogRecord({"msg": "after 4"}))
    Journal(journal.path).recover([handler])
    files = {path.name: path.read_text() for path in tmp_path.glob("app.log*")}
    assert files == {"app.log": "", "app.log.1": "committed\n", "app.log.2": "old\n"}
    handler.close()


def test_an_mplog_file_handler_s_rotated_file_is_found_by_inode(tmp_path: Path) -> None:
    """An ``mplog.FileHandler`` that rotated twice after the commit: the file
    live at the commit is found rotated and keeps what was committed; the one
    rotated after it goes, and the live one is emptied."""
    log = tmp_path / "app.log"
    handler = mplog.FileHandler(str(log), max_bytes=20)
    journal = Journal(str(tmp_path / "j"))
    journal.recover([handler])
    handler.write_lines([(0.0, "0123456789")])
    _commit(journal, [handler], {1: 10})
    handler.write_lines([(0.0, "abcdefghij"), (0.0, "klmnopqrst")])  # each rotates first
    assert len(handler.rotated_files()) == 2
    Journal(journal.path).recover([handler])
    assert [Path(name).read_text() for name in handler.rotated_files()] == ["0123456789\n"]
    assert log.read_text() == ""
    handler.close()


def test_the_journal_is_rewritten_as_one_line_keeping_what_is_needed(tmp_path: Path, monkeypatch) -> None:
    """Past COMPACT_BYTES the journal becomes one line: the streams still
    connected and those recovered and not back yet; one that ended goes."""
    monkeypatch.setattr(mplog._journal, "COMPACT_BYTES", 300)
    path = str(tmp_path / "j")
    first = Journal(path)
    first.recover([])
    first.commit(_Mark(1, {1: 10, 2: 20, 3: 30}, 0, first))
    second = Journal(path)  # after a kill: 1, 2 and 3 may come back
    second.recover([])
    number = 0
    while len(Path(path).read_bytes().splitlines()) != 1 or number < 2:
        number += 1
        second.commit(_Mark(number, {1: 10 + number, 4: 40}, 0, second))  # 1 is back, 4 is new
    assert set(_read(path)[0]) == {1, 2, 3, 4}  # 2 and 3 not back yet: kept
    for later in range(number + 1, number + 100):
        second.commit(_Mark(later, {1: 10 + later}, 0, second))  # 4 has ended
        if len(Path(path).read_bytes().splitlines()) == 1:
            break
    committed, _ = _read(path)
    assert set(committed) == {1, 2, 3}
    assert committed[1] == 10 + later and committed[2] == 20
    assert file_state(logging.StreamHandler()) is None  # a stream's writes cannot be taken back
