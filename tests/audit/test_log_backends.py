"""The decision log's compact entries and hash scheme 2 on both backends: a SQLite file and a real
PostgreSQL server (started by the tests on 127.0.0.1)."""

from __future__ import annotations

import pytest

from rules.app import Dacp
from rules.audit.log import DecisionLog
from rules.audit.entry_format import FORMAT
from rules.policy.loader import load_bundle
from rules.engine.query import parse_query
from rules.settings import Settings
from tests.support.postgres_node import postgres  # noqa: F401 - pytest fixture
from tests.support import ROOT
from tests.support.workload import corpus

pytestmark = pytest.mark.integration
POLICIES = ROOT / "policies"


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "log.sqlite")
    return request.getfixturevalue("postgres").create_database()


def test_a_streamed_batch_is_logged_compactly_and_reads_back_exactly(target):
    dacp = Dacp(Settings(policies=POLICIES, log=target, engine="durable_rules"), bundle=load_bundle(POLICIES))
    queries = [parse_query(d) for d in corpus(600, seed=41)]
    decisions = [d for chunk in dacp.evaluate_stream(queries, chunk=250) for d in chunk]
    log = dacp.log
    assert log.hash_scheme == 2 and log.count() == 600
    result = log.verify()
    assert result.ok, result.problem
    for d in decisions[::7]:
        entry = log.get(d.id)
        assert entry.body["format"] == FORMAT and "reasons" not in entry.body["decision"]
        assert dacp.logged_decision(entry) == d.to_json()
    some = decisions[5]
    assert dacp.replay(some.id).identical
    assert "Rules evaluated:" in dacp.explain(some.id)
    again = DecisionLog(target)  # another process's view: the same chain, the same head
    assert again.verify().head == result.head
