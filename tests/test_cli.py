"""``mplog run``: a Python program started from its own command line runs in
an mplog session, with nothing changed in it or in its logging configuration.
Servers under ``mplog run`` (uvicorn, ``fastapi run``) are tested under load in
test_fastapi.py and test_django_asgi.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_run_gives_the_program_s_exit_status_and_its_children_join(tmp_path):
    """``mplog run -- script.py ARGS``: the script sees its arguments, its
    basicConfig(filename=...) configures as without mplog (the file is then
    the listener's), its forked workers' records reach that file, and its exit
    status is the command's."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import logging, multiprocessing, sys

            def work(n):
                logging.getLogger("w").info("task %d", n)

            if __name__ == "__main__":
                logging.basicConfig(filename={str(tmp_path / "out.log")!r}, level="INFO", format="%(message)s")
                with multiprocessing.get_context("fork").Pool(2) as pool:
                    pool.map(work, range(int(sys.argv[1])))
                sys.exit(3)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mplog", "run", "--", str(script), "50"], capture_output=True, timeout=120
    )
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    lines = (tmp_path / "out.log").read_text().splitlines()
    assert sorted(lines) == sorted(f"task {n}" for n in range(50))


def test_run_says_what_it_cannot_find():
    """A program that is neither a file nor a command: usage error 2, naming it."""
    result = subprocess.run(
        [sys.executable, "-m", "mplog", "run", "--", "no-such-program-here"], capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert "no program 'no-such-program-here'" in result.stderr.decode()


def test_run_without_a_program_is_a_usage_error():
    """``mplog run`` alone: usage error 2, with an example."""
    result = subprocess.run([sys.executable, "-m", "mplog", "run"], capture_output=True, timeout=60)
    assert result.returncode == 2
    assert "mplog run -- uvicorn app:app --workers 4" in result.stderr.decode()
