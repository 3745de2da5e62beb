"""The documentation cannot go stale: every Python snippet on the site is a
file that runs here, with its records counted; every public name has a
docstring for the API reference; no page carries Python code that is not such
a file; and the README's example is the tutorial's."""

from __future__ import annotations

import glob
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterable, Iterator, List, Tuple

import pytest

import mplog
import mplog.cli
import mplog.gunicorn
from tests import rsyslog
from tests.conftest import requires

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"

#: A pattern for a line and the ids its groups must show, each exactly once.
Expect = Tuple[str, Iterable[object]]

TASKS = [(r"task (\d+)", range(1000))]


def _every(*ranges: Iterable[int], times: int = 1) -> List[object]:
    return [n for _ in range(times) for r in ranges for n in r]


#: snippet -> {file glob -> what each of its lines must be}; every line of
#: those files must match one of the patterns, and each id appear as listed.
RUNS: Dict[str, Dict[str, List[Expect]]] = {
    "tutorial_pool.py": {"app.log": [(r"^task (\d+)$", range(1000))]},
    "tutorial_adopt.py": {
        "app.log": [
            (r" INFO app: task (\d+) in process \d+$", range(1000)),
            (r" app: sum of squares: (332833500)$", [332833500]),
        ]
    },
    "multiprocessing_kinds.py": {
        "app.log": [
            (r" INFO app: task (\d+)$", _every(range(200), times=3)),
            (r" INFO app: worker \d+ ready for (pool)$", ["pool"] * 6),
        ]
    },
    "subprocess_parent.py": {
        "app.log": [
            (r"^child (\d record \d+)$", [f"{c} record {n}" for c in range(3) for n in range(1000)]),
            (r"^(starting the children)$", ["starting the children"]),
        ]
    },
    "buffered_os_exit.py": {"app.log": [(r"^record (\d+)$", range(1000))]},
    "fork_warning.py": {
        "app.log": [(r"^(hello from the child)$", ["hello from the child"]), (r"^(child done)$", ["child done"])]
    },
    "forkserver_early.py": {"app.log": [(r"^task (\d+)$", range(1000))]},
    "named_loggers.py": {
        "app.log": [(r"^task (\d+)$", range(1000))],
        "audit.log": [(r"^task (\d+) audited$", range(1000))],
    },
    "takeover_dictconfig.py": {"app.log*": [(r" INFO app: task (\d+)$", range(1000))]},
    "cookbook_queue.py": {"app.log": [(r"^task (\d+)$", range(1000))]},
    "fileconfig.py": {"app.log": [(r" INFO app: task (\d+)$", range(1000))]},
    "dictconfig_queue_handler.py": {"app.log": [(r"^task (\d+)$", range(1000))]},
    "file_handler_options.py": {"app.log": []},  # JSON lines: see _check_json_lines
    "shipping_handler.py": {"app.log*": [(r'"message": "task (\d+)"', range(1000))]},
}

#: Files the snippets above read or start, not run on their own (the serve
#: ones run in test_the_serve_snippets_log_through_a_real_server, forwarding.py
#: in test_the_forwarding_snippet_reaches_a_real_rsyslogd, opentelemetry_otlp.py
#: in test_opentelemetry.py's test_the_otlp_snippet_exports_to_a_real_receiver).
HELPERS = {
    "subprocess_child.py",
    "logging.ini",
    "serve.json",
    "serve_client.py",
    "sitecustomize.py",
    "forwarding.py",
    "opentelemetry_otlp.py",
}

#: Snippets that need a newer Python than 3.8.
NEEDS = {"dictconfig_queue_handler.py": (3, 12)}


def _lines(directory: Path, pattern: str) -> List[str]:
    lines: List[str] = []
    for path in sorted(glob.glob(str(directory / pattern))):
        with open(path, encoding="utf-8") as file:
            lines.extend(file.read().splitlines())
    return lines


def _check_lines(lines: List[str], expectations: List[Expect]) -> None:
    """Each line matches one pattern; each pattern's ids are the expected ones,
    none missing or doubled."""
    found: List[Counter] = [Counter() for _ in expectations]
    strays = []
    for line in lines:
        for counter, (pattern, _ids) in zip(found, expectations):
            match = re.search(pattern, line)
            if match:
                counter[match.group(1)] += 1
                break
        else:
            strays.append(line)
    assert strays == [], f"lines that are no snippet record (torn?): {strays[:5]}"
    for counter, (pattern, ids) in zip(found, expectations):
        expected = Counter(str(i) for i in ids)
        assert counter == expected, (
            f"{pattern}: missing {sorted((expected - counter).elements())[:10]}, "
            f"extra {sorted((counter - expected).elements())[:10]}"
        )


def _check_json_lines(directory: Path) -> None:
    records = [json.loads(line) for line in _lines(directory, "app.log")]
    assert Counter(record["task"] for record in records) == Counter(range(1000))
    assert {record["message"] for record in records} == {f"task {n}" for n in range(1000)}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_snippet_runs_and_every_record_arrives(name, tmp_path):
    """Each snippet the pages include runs as printed, in a directory of its
    own, prints nothing (no warning either), and its files hold every record
    it logs exactly once."""
    if sys.version_info < NEEDS.get(name, (3, 8)):
        pytest.skip(f"{name} needs Python {'.'.join(map(str, NEEDS[name]))}+")
    for helper in [name, *HELPERS]:
        shutil.copy(SNIPPETS / helper, tmp_path / helper)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MPLOG", "PYTHONWARNINGS"))}
    result = subprocess.run(
        [sys.executable, name], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    if name == "file_handler_options.py":
        _check_json_lines(tmp_path)
        return
    for pattern, expectations in RUNS[name].items():
        _check_lines(_lines(tmp_path, pattern), expectations)


def test_every_snippet_file_is_run():
    """No file in docs/snippets escapes the test above."""
    assert {p.name for p in SNIPPETS.iterdir() if p.suffix in (".py", ".ini", ".json")} == set(RUNS) | HELPERS


# -- the pages ------------------------------------------------------------------------

#: Code fences a page may hold inline: commands and files that are not Python.
INLINE_OK = {"console", "sh", "bash", "text", "ini", "toml", "json", ""}
FENCE = re.compile(r"^(`{3,}|:{3,})\s*(.*)$")
DIRECTIVE = re.compile(r"^\{([\w:-]+)\}\s*(.*)$")


def _pages() -> Iterator[Path]:
    for path in sorted(DOCS.rglob("*.md")):
        if "_build" not in path.parts:
            yield path


def _blocks(page: Path) -> Iterator[Tuple[str, str]]:
    """(directive, argument) of each fenced directive of ``page``, and
    ("code", language) of each code block."""
    stack: List[Tuple[str, bool]] = []  # open fences, and whether each holds literal code
    for line in page.read_text(encoding="utf-8").splitlines():
        match = FENCE.match(line.strip())
        if not match:
            continue
        fence, rest = match.groups()
        if stack and fence[0] == stack[-1][0][0] and len(fence) >= len(stack[-1][0]) and not rest:
            stack.pop()
            continue
        if stack and stack[-1][1]:
            continue  # a fence inside literal code is text
        directive = DIRECTIVE.match(rest)
        if directive:
            stack.append((fence, directive.group(1) in ("code-block", "code", "literalinclude")))
            yield directive.group(1), directive.group(2).strip()
        else:
            stack.append((fence, True))
            yield "code", rest.split()[0] if rest else ""


def test_pages_hold_no_python_that_is_not_run():
    """A Python block on a page must be a literalinclude of a snippet this
    file runs, or of an example a test serves or runs; any other code block
    is a command or a configuration file."""
    problems = []
    for page in _pages():
        for kind, argument in _blocks(page):
            where = f"{page.relative_to(DOCS)}: {kind} {argument}"
            if kind == "literalinclude":
                target = (page.parent / argument).resolve()
                if not target.is_file():
                    problems.append(f"{where}: no such file")
                elif not _is_run(target):
                    problems.append(f"{where}: no test runs this file")
            elif kind in ("code", "code-block", "code-cell") and argument not in INLINE_OK:
                problems.append(f"{where}: Python belongs in docs/snippets/, included")
    assert problems == []


#: Example directories that a test in tests/ serves or runs as they are.
RUN_EXAMPLES = {
    "celery": "test_celery.py",
    "django": "test_django.py",
    "fastapi": "test_fastapi.py",
    "flask": "test_flask.py",
    "gunicorn": "test_gunicorn.py",
    "gunicorn_configs": "test_gunicorn_configs.py",
    "opentelemetry": "test_opentelemetry.py",
    "systemd": "test_serve_activation.py",
    "tornado": "test_servers.py",
    "uvicorn": "test_servers.py",
    "uwsgi": "test_uwsgi.py",
}


def _is_run(target: Path) -> bool:
    if target.parent == SNIPPETS:
        return target.name in RUNS or target.name in HELPERS
    relative = target.relative_to(ROOT).parts
    if relative == ("examples", "quickstart.py"):
        return True  # .ci/run runs it, as the README says
    if relative[0] == "examples" and relative[1] in RUN_EXAMPLES:
        test = (ROOT / "tests" / RUN_EXAMPLES[relative[1]]).read_text(encoding="utf-8")
        return '"examples"' in test and f'"{relative[1]}"' in test
    return False


def test_the_tests_the_pages_name_exist():
    """Each ``tests/test_x.py::test_name`` and each test named beside its file
    on a page (the guarantees, the how-tos) is a test function in tests/."""
    defined = {
        (path.name, name)
        for path in (ROOT / "tests").glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(encoding="utf-8"), re.M)
    }
    named = {name for _file, name in defined}
    problems = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for file, name in re.findall(r"tests/(test_\w+\.py)::(test_\w+)", text):
            if (file, name) not in defined:
                problems.append(f"{page.name}: tests/{file}::{name}")
        for name in re.findall(r"`(test_\w+)`", text):
            if name not in named:
                problems.append(f"{page.name}: {name}")
    assert problems == []


def test_the_readme_example_is_the_tutorial_snippet():
    """The README's usage example is docs/snippets/tutorial_pool.py, byte for
    byte (indented), so it runs as printed too."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    snippet = (SNIPPETS / "tutorial_pool.py").read_text(encoding="utf-8")
    block = ".. code-block:: python\n\n" + "".join(
        f"    {line}" if line.strip() else line for line in snippet.splitlines(True)
    )
    assert block in readme


# -- the API reference ----------------------------------------------------------------


def _public_modules() -> List[Tuple[ModuleType, List[str]]]:
    modules = [
        (mplog, list(mplog.__all__)),
        (mplog.gunicorn, [*mplog.gunicorn.__all__, "Logger"]),
        (mplog.cli, list(mplog.cli.__all__)),
    ]
    # The Celery glue imports celery (the test extra has it; tox -e docs does not).
    if importlib.util.find_spec("celery") is not None:
        import mplog.integrations.celery as celery

        modules.append((celery, list(celery.__all__)))
    # The OpenTelemetry glue imports the SDK (the test extra has it).
    if importlib.util.find_spec("opentelemetry.sdk") is not None:
        import mplog.integrations.opentelemetry as opentelemetry

        modules.append((opentelemetry, list(opentelemetry.__all__)))
    import mplog.integrations.uwsgi as uwsgi  # does nothing outside uWSGI

    modules.append((uwsgi, list(uwsgi.__all__)))
    return modules


def _undocumented(owner: str, value: object) -> Iterator[str]:
    """``owner`` if ``value`` has no docstring of its own; for a class, also
    each public method and property it defines."""
    if isinstance(value, (str, tuple)):
        return  # data: documented by its #: comment, which autodoc reads from the source
    if not (getattr(value, "__doc__", None) or "").strip():
        yield owner
    if inspect.isclass(value):
        for name, member in vars(value).items():
            if name.startswith("_") or not (callable(member) or isinstance(member, property)):
                continue
            if not (getattr(member, "__doc__", None) or "").strip():
                yield f"{owner}.{name}"


def test_every_public_name_has_a_docstring_and_a_place_in_the_reference():
    """Each public name (mplog.__all__, the gunicorn hooks, the Celery glue,
    the command) and each public method of its classes has a docstring, and
    docs/api.md documents the name."""
    reference = (DOCS / "api.md").read_text(encoding="utf-8")
    missing, unreferenced = [], []
    for module, names in _public_modules():
        for name in names:
            qualified = f"{module.__name__}.{name}"
            missing.extend(_undocumented(qualified, getattr(module, name)))
            if name != "__version__" and not re.search(rf"\b{re.escape(qualified)}\b", reference):
                unreferenced.append(qualified)
    assert missing == [], "public names without a docstring"
    assert unreferenced == [], "public names docs/api.md does not document"


def test_the_mplog_command_documents_its_options():
    """The reference's command section is argparse's own help for ``mplog run``."""
    reference = (DOCS / "api.md").read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mplog", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for option in re.findall(r"^\s+(--[\w-]+)", result.stdout, re.M):
        assert option in reference, f"docs/api.md does not mention {option}"


def test_the_serve_snippets_log_through_a_real_server(tmp_path):
    """``mplog serve --config serve.json``; then serve_client.py, and a plain
    ``python -c`` with sitecustomize.py on its path, each with
    ``MPLOG_ADDRESS``: the server's app.log has both programs' 1,000 lines."""
    for name in ("serve.json", "serve_client.py", "sitecustomize.py"):
        shutil.copy(SNIPPETS / name, tmp_path / name)
    address = str(tmp_path / "run" / "serve.sock")
    env = dict(os.environ, MPLOG_ADDRESS=address, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "mplog", "serve", "--config", "serve.json", "--socket", address],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        assert "serving" in server.stderr.readline()
        client = subprocess.run([sys.executable, "serve_client.py"], cwd=tmp_path, env=env, timeout=60)
        assert client.returncode == 0
        plain = "import logging\nfor n in range(1000): logging.getLogger('other').warning('task %d', 1000 + n)"
        custom = dict(env, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
        assert subprocess.run([sys.executable, "-c", plain], cwd=tmp_path, env=custom, timeout=60).returncode == 0
    finally:
        server.terminate()
        server.wait(60)
    assert server.returncode == 0
    _check_lines(
        _lines(tmp_path, "app.log"),
        [(r" INFO app: task (\d+)$", range(1000)), (r" WARNING other: task (\d+)$", range(1000, 2000))],
    )


@requires(rsyslog.AVAILABLE, "needs rsyslogd and rsyslog-relp (Debian packages)")
def test_the_forwarding_snippet_reaches_a_real_rsyslogd(tmp_path):
    """forwarding.py, as printed but for its port (2514 may be taken: a free
    one instead), with rsyslogd's RELP input there: its 1,000 records reach
    rsyslog once each."""
    snippet = (SNIPPETS / "forwarding.py").read_text()
    assert snippet.count("2514") == 1, "the snippet no longer names port 2514 once"
    receiver = rsyslog.Rsyslog(tmp_path / "rsyslog", "relp")
    (tmp_path / "forwarding.py").write_text(snippet.replace("2514", str(receiver.port)))
    receiver.start()
    try:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MPLOG")}
        result = subprocess.run(
            [sys.executable, "forwarding.py"],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    finally:
        receiver.stop()
    _check_lines(receiver.lines(), [(r"^app \d+ task (\d+)$", range(1000))])
