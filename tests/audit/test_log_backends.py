"""The verifiable log on both backends, a SQLite file and a real PostgreSQL server (started by the tests on
127.0.0.1): compact entries, the tree, checkpoints, receipts, and concurrent writers that never fork it."""

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
    dacp = Dacp(Settings(policies=POLICIES, log=target, engine="durable_rules", approvals={"demo_keys_in_policy_dir": True}),
                bundle=load_bundle(POLICIES))  # the shipped DEMO approvers file sits inside policies/
    queries = [parse_query(d) for d in corpus(600, seed=41)]
    decisions = [d for chunk in dacp.evaluate_stream(queries, chunk=250) for d in chunk]
    log = dacp.log
    assert log.count() == 600
    result = log.verify()
    assert result.ok, result.problem
    for d in decisions[::7]:
        entry = log.get(d.id)
        assert entry.body["format"] == FORMAT and "reasons" not in entry.body["decision"]
        assert dacp.logged_decision(entry) == d.to_json()
    some = decisions[5]
    assert dacp.replay(some.id).identical
    assert "Rules evaluated:" in dacp.explain(some.id)
    again = DecisionLog(target)  # another process's view: the same tree, the same root
    assert again.verify().head == result.head


def _writer(target: str, worker: int, n: int, seed: bytes) -> None:
    from rules.audit.checkpoint import Signer as S
    from rules.audit.log import DecisionLog as DL

    log = DL(target)
    signer = S.from_seed("operator", seed)
    for i in range(n):
        log.append([("decision", f"w{worker}-{i}-{j}", None, {"worker": worker, "i": i, "j": j})
                    for j in range(1 + (worker + i) % 4)])
        if i % 5 == 4:
            log.checkpoint(signer)  # checkpoints signed while the others append
    log.close()


@pytest.mark.slow  # eight processes racing on each backend
def test_eight_concurrent_writers_make_one_tree_whose_checkpoints_all_agree(target):
    import multiprocessing as mp

    from rules.audit.checkpoint import Signer

    seed = b"\x07" * 32
    DecisionLog(target, origin="race/log").close()
    ctx = mp.get_context("spawn")
    workers, n = 8, 20
    procs = [ctx.Process(target=_writer, args=(target, w, n, seed)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    log = DecisionLog(target)
    want = {f"w{w}-{i}-{j}" for w in range(workers) for i in range(n) for j in range(1 + (w + i) % 4)}
    assert {e.entry_id for e in log.entries()} == want and log.count() == len(want)
    checkpoints = log.tree.checkpoints()
    assert len(checkpoints) >= 8
    res = log.verify(checkpoints[0][2], [Signer.from_seed("operator", seed).verifier()])
    assert res.ok and res.checkpoints == len(checkpoints), res.render()
