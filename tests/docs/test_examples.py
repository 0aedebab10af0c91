"""The console examples of README.md and docs/*.md run as tests, so that they cannot drift (issue 18).

Every ```console block is taken apart into commands (lines starting ``$ ``; a line ending in ``\\`` goes on
on the next) and the output shown under each. The commands of one file run in order in one ``bash`` (so
variables carry from command to command) in a scratch copy of the repository - ``policies/``,
``examples/``, ``data/``, ``dacp.toml``, ``.gitignore``, and a link to ``.venv`` - with ``.venv/bin`` on the
PATH (so ``dacp`` and ``.venv/bin/dacp`` are the same) and stdout and stderr together, as a terminal shows
them. The output shown is compared line by line, trailing blanks aside, with this small placeholder syntax:

* ``…`` (or ``...``) inside a line stands for any text (an id, a hash, a time): ``decision_id": "01a2…"``;
* a line that is only ``…`` stands for any number of lines (zero or more);
* a command with no output shown is run, and its output is not compared.

A block preceded by ``<!-- doctest: skip (why) -->`` is not run (a server in the background, a benchmark's
figures, keys under /etc); ``SKIPPED_FILES`` names files whose examples need what a test cannot give.
After a file's examples ran, the scratch copy - a git repository with the repository's ``.gitignore`` -
must show nothing untracked: what the examples write is ignored, so ``git add .`` commits no token.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIPPED_FILES = {  # file: why its examples are not run here (they are run by their own tests)
    "audit.md": "keys under /etc/dacp and a log of 1,200 entries (tests/audit/ holds the same round)",
    "ledger.md": "needs anvil and litecoind with funded custody (tests/ledger/ runs the same session)",
    "deploy.md": "a production host (PostgreSQL at db.internal, systemd units)",
}
MARK = "<!-- doctest: skip"
END = "@@dacp-doc-example-done@@"


def blocks(path: Path) -> list[tuple[int, list[tuple[str, list[str]]]]]:
    """(line, [(command, expected lines)]) for each console block of ``path`` that is not skipped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```console":
            skipped = any(MARK in lines[j] for j in range(max(0, i - 2), i))
            start, i = i + 1, i + 1
            body = []
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if not skipped:
                out.append((start, parse(body)))
        i += 1
    return out


def parse(body: list[str]) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    it = iter(body)
    for line in it:
        if line.startswith("$ "):
            cmd = line[2:]
            while cmd.endswith("\\"):
                cmd = cmd[:-1] + "\n" + next(it)
            steps.append((cmd, []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def matches(expected: list[str], actual: list[str]) -> bool:
    exp = [e.rstrip().replace("...", "…") for e in expected]
    act = [a.rstrip() for a in actual]

    def line_ok(e: str, a: str) -> bool:
        return re.fullmatch(".*?".join(map(re.escape, e.split("…"))), a) is not None

    def walk(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i].strip() == "…":
            return any(walk(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and line_ok(exp[i], act[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


def scratch(tmp_path: Path) -> Path:
    work = tmp_path / "checkout"
    work.mkdir()
    for part in ("policies", "examples", "data"):
        shutil.copytree(ROOT / part, work / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("dacp.toml", ".gitignore"):
        if (ROOT / part).is_file():
            shutil.copy(ROOT / part, work / part)
    (work / ".venv").symlink_to(ROOT / ".venv")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "checkout"], check=True)
    return work


def run_file(path: Path, tmp_path: Path) -> list[str]:
    work = scratch(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DACP_")}
    env.update(PATH=f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}", DACP_CACHE_DIR=str(tmp_path / "cache"),
               COLUMNS="200", TZ="UTC", PYTHONUNBUFFERED="1")
    failures = []
    for line, steps in blocks(path):
        script = "exec 2>&1\n" + "".join(f"{cmd}\necho {END} $?\n" for cmd, _ in steps)
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        outs = done.stdout.split(f"{END} ")
        for k, (cmd, expected) in enumerate(steps):
            got = (outs[k].split("\n", 1)[1] if k else outs[0]) if k < len(outs) else ""
            if expected and not matches(expected, got.splitlines()):
                failures.append(f"{path.name}:{line}: $ {cmd}\n--- expected\n" + "\n".join(expected) + "\n--- got\n" + got)
    status = subprocess.run(["git", "-C", str(work), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    if status.strip():
        failures.append(f"{path.name}: the examples left files git would add:\n{status}")
    return failures


@pytest.mark.parametrize("path", [p for p in DOCS if p.name not in SKIPPED_FILES], ids=lambda p: p.name)
def test_console_examples_run_as_shown(path, tmp_path):
    failures = run_file(path, tmp_path)
    assert not failures, "\n\n".join(failures)


def test_the_placeholder_syntax():
    assert matches(["id 01a2…", "…", "end"], ["id 01a2ff", "x", "y", "end"])
    assert matches(["a…b"], ["ab"]) and not matches(["a…b"], ["ba"])
    assert not matches(["x"], ["x", "more"]) and matches(["…"], [])
