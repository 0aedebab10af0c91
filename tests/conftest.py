"""Test-suite wide settings.

Slow tests (``@pytest.mark.slow``: the benchmark smoke runs, callgrind, multi-process races) are left out of a
plain ``pytest -q`` so that the default run stays short; ``pytest -q -m slow`` runs them (``.ci/run`` does, as
its second step), and any ``-m`` expression is taken as given (``-m "slow or not slow"`` runs everything).
Integration tests (``@pytest.mark.integration``: real anvil, litecoind, PostgreSQL, uvicorn) run by default;
they skip locally when a node binary is missing and fail under ``CI=true``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:  # the caller chose: -m slow, -m "not integration", ...
        return
    kept = [i for i in items if i.get_closest_marker("slow") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("slow") is not None])
        items[:] = kept
