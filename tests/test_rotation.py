"""What rotation options mean: periods, counts, compression, and the
background compressor (sizes and durations are in test_files)."""

from __future__ import annotations

import gzip
import logging
import time

import pytest

from mplog._rotation import Compressor, Periods, gzip_file, parse_compress, parse_count


def _wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.005)


def test_compressor_compresses_when_due_and_the_rest_at_close(tmp_path):
    """A file is compressed once due, not before; close compresses what still
    waits, at once; retention runs after each batch."""
    now, later = tmp_path / "app.log.1", tmp_path / "app.log.2"
    now.write_text("now\n")
    later.write_text("later\n")
    batches = []
    compressor = Compressor(lambda: batches.append(sorted(p.name for p in tmp_path.iterdir())))
    compressor.submit(str(now), time.time())
    compressor.submit(str(later), time.time() + 3600)
    _wait_until(lambda: batches)
    assert (tmp_path / "app.log.1.gz").exists() and later.exists()
    started = time.monotonic()
    compressor.close()
    assert time.monotonic() - started < 10  # did not wait the hour
    assert gzip.decompress((tmp_path / "app.log.2.gz").read_bytes()) == b"later\n"
    assert batches[-1] == ["app.log.1.gz", "app.log.2.gz"]


def test_gzip_file_replaces_the_file(tmp_path):
    """The gzip holds the file's bytes; the file and the temporary are gone."""
    path = tmp_path / "app.log.x"
    data = b"line\n" * 300_000  # more than one read of 1 MiB
    path.write_bytes(data)
    gzip_file(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log.x.gz"]
    assert gzip.decompress((tmp_path / "app.log.x.gz").read_bytes()) == data


def test_a_file_that_cannot_be_compressed_is_reported(tmp_path, capfd, monkeypatch):
    """A failure is said on stderr through mplog's reporter (silenced, as
    logging's own reports are, by logging.raiseExceptions = False)."""
    missing = tmp_path / "gone"
    gzip_file(str(missing))
    err = capfd.readouterr().err
    assert err.startswith(f"mplog: cannot compress {missing}: ") and "No such file" in err
    monkeypatch.setattr(logging, "raiseExceptions", False)
    gzip_file(str(missing))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    "when, interval, message",
    [
        ("X", 1, "when must be one of S, M, H, D, midnight, W0-W6; got 'X'"),
        ("W7", 1, "when must be one of"),
        (5, 1, "when must be one of S, M, H, D, midnight, W0-W6; got 5"),
        ("", 1, "when must be one of"),
        ("S", True, "interval must be a positive int, got True"),
        ("S", 1.0, "interval must be a positive int, got 1.0"),
        ("H", 5, "interval 5 with when='H' does not divide a day evenly"),
    ],
)
def test_bad_periods(when, interval, message):
    """when and interval are checked once, with a message naming the problem."""
    with pytest.raises(ValueError, match=message):
        Periods(when, interval)


def test_period_units_as_kept():
    """Any case; midnight is D; a week names its first day."""
    assert [Periods(when).unit for when in ("s", "Midnight", "d", "w3")] == ["S", "D", "D", "W3"]


def test_counts_and_compression():
    """backup_count is an int, 0 or more; compress is None or 'gzip'."""
    assert parse_count(0, "backup_count") == 0 and parse_count(7, "backup_count") == 7
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError, match=f"backup_count must be a non-negative int, got {bad!r}"):
            parse_count(bad, "backup_count")  # type: ignore[arg-type]
    assert parse_compress(None) is None and parse_compress("gzip") == "gzip"
    with pytest.raises(ValueError, match="compress must be None or 'gzip', got 'zip'"):
        parse_compress("zip")
