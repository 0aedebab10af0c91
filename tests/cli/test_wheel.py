"""A wheel that works anywhere (issue 18): built with ``pip wheel --no-deps`` from a copy of the source, installed
into a fresh virtual environment (its dependencies resolved by pip from its cache and the configured index),
then ``dacp init``, ``validate``, ``evaluate``, ``test``, ``explain`` and ``serve --openapi`` run from a directory
that is not the repository. About a minute, most of it pip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

SOURCE = ("pyproject.toml", "README.md", "rules", "adapters", "policies", "data/prices")


def sh(*cmd: str | Path, cwd: Path, env: dict[str, str], ok: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    src = tmp_path / "src"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    for part in SOURCE:
        (src / part).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, src / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / part, src / part)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DACP_", "PYTHON", "VIRTUAL_ENV"))}
    env["DACP_CACHE_DIR"] = str(tmp_path / "cache")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", src, cwd=tmp_path, env=env)
    (wheel,) = (tmp_path / "dist").glob("dacp-*.whl")

    base = getattr(sys, "_base_executable", sys.executable)
    venv = tmp_path / "venv"
    sh(base, "-m", "venv", venv, cwd=tmp_path, env=env)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path, env=env, timeout=900)
    dacp = venv / "bin" / "dacp"

    work = tmp_path / "elsewhere"
    work.mkdir()
    located = sh(venv / "bin" / "python", "-c", "import rules; print(rules.__file__)", cwd=work, env=env).stdout
    assert located.startswith(str(venv)), located  # the installed package, not the checkout

    missing = sh(dacp, "validate", cwd=work, env=env, ok=False)
    assert missing.returncode == 3
    assert "no policy bundle at policies: run `dacp init` or pass --policies (or DACP_POLICIES)" in missing.stderr

    assert "wrote the starter bundle to policies" in sh(dacp, "init", cwd=work, env=env).stdout
    shipped = sh(sys.executable, "-m", "rules.cli", "validate", ROOT / "policies", cwd=ROOT, env=env).stdout
    assert sh(dacp, "validate", cwd=work, env=env).stdout.split("sha256 ")[1] == shipped.split("sha256 ")[1]
    assert " 0 failed" in sh(dacp, "test", cwd=work, env=env).stdout
    shutil.copy(ROOT / "examples" / "queries" / "btc-eligible.json", work / "q.json")
    decision = json.loads(sh(dacp, "evaluate", "q.json", cwd=work, env=env).stdout)
    assert decision["eligible"] is True
    assert "ELIGIBLE" in sh(dacp, "explain", decision["decision_id"], cwd=work, env=env).stdout
    openapi = sh(dacp, "serve", "--openapi", "-", cwd=work, env=env).stdout
    assert openapi == (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
