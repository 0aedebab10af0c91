"""The decision log's entry formats: the compact logged decision, streaming, and the logs of earlier versions.

Logs written by earlier versions (``tests/data/decision-log-v1.sqlite``, hash scheme 1 and the full decision
form; ``decision-log-v2.sqlite``, scheme 2 and compact format 2) are refused until ``dacp audit migrate``
verifies them and folds them into the tree; then they verify, explain, replay and take new entries."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.evidence import PriceEvidence
from rules.app import Dacp
from rules.audit import legacy
from rules.audit.log import DecisionLog, LegacyLogError
from rules.audit.migrate import migrate
from rules.errors import StorageError
from rules.collector import gc_paused
from rules.engine.ids import new_id
from rules.audit.entry_format import FORMAT, log_body
from rules.policy.loader import load_bundle
from rules.engine.query import parse_query
from rules.settings import Settings
from rules.engine.trace import compact, expand
from tests.support import ROOT
from tests.support.tamper import edit_entry
from tests.support.workload import corpus

POLICIES = ROOT / "policies"
DEMO_KEYS = {"demo_keys_in_policy_dir": True}  # the shipped approvers file is inside policies/ (DEMO keys)
V1_LOG = ROOT / "tests" / "data" / "decision-log-v1.sqlite"
V2_LOG = ROOT / "tests" / "data" / "decision-log-v2.sqlite"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(POLICIES)


def dacp_for(tmp_path, bundle, engine="python", name="log.sqlite") -> Dacp:
    return Dacp(Settings(policies=POLICIES, log=tmp_path / name, engine=engine, approvals=DEMO_KEYS), bundle=bundle)


def assert_replays(dacp: Dacp, entry) -> None:
    """An old decision replays identically, but for the one deliberate change of the decision contract since
    (issue 15: an ineligible decision excludes nothing by limits, where earlier versions wrote an amount)."""
    r = dacp.replay(entry.entry_id)
    if not r.identical:
        assert r.original["eligible"] is False and r.replayed["excluded_by_limits_usd"] == "0.00", r.differences
        assert all(d.startswith("excluded_by_limits_usd:") for d in r.differences), r.differences


# -- the logs of earlier versions: migrated, then they read, verify, explain, replay and grow ----------
def test_a_log_of_the_previous_version_is_refused_until_migrated_then_reads_replays_and_grows(tmp_path):
    """tests/data/decision-log-v1.sqlite: hash scheme 1, the full decision form of that version."""
    path = tmp_path / "old.sqlite"
    shutil.copy(V1_LOG, path)
    with pytest.raises(LegacyLogError, match="dacp audit migrate"):
        DecisionLog(path)
    m = migrate(path)
    assert m.entries == 3 and m.scheme == 1
    dacp = Dacp(Settings(policies=POLICIES, log=path, engine="durable_rules", approvals=DEMO_KEYS))
    log = dacp.log
    assert log.verify().ok and log.count() == 4
    first = next(log.entries())
    assert first.kind == "log.migration" and first.body["head"] == m.head and first.body["entries"] == 3
    for e in log.entries("decision"):
        assert "reasons" in e.body["decision"]  # the full form of that version, as it was stored
        assert_replays(dacp, e)
        assert "Rules evaluated:" in dacp.explain(e.entry_id)
    (d,) = dacp.evaluate([parse_query(corpus(1, seed=4)[0])])
    assert log.verify().ok and log.count() == 5 and log.get(d.id).body["format"] == FORMAT
    assert dacp.replay(d.id).identical


def test_a_log_of_compact_format_2_is_migrated_and_reads_verifies_explains_replays_and_grows(tmp_path):
    """tests/data/decision-log-v2.sqlite: 20 decisions written by the version before format 3 (limits in
    the trace as dicts, with their thresholds) - every asset, refusals, limits that bind and that do not."""
    path = tmp_path / "v2.sqlite"
    shutil.copy(V2_LOG, path)
    assert migrate(path).scheme == 2
    dacp = Dacp(Settings(policies=POLICIES, log=path, engine="durable_rules", approvals=DEMO_KEYS))
    log = dacp.log
    assert log.verify().ok and log.count() == 21
    bound = 0
    for e in log.entries("decision"):
        assert e.body["format"] == 2
        public = dacp.logged_decision(e)
        bound += any(r.get("counted_usd") is not None for r in public["reasons"])
        assert all(set(r) >= {"rule", "outcome", "description", "observed", "threshold", "policy"} for r in public["reasons"])
        assert_replays(dacp, e)
        assert "Rules evaluated:" in dacp.explain(e.entry_id)
    assert bound == 8
    (d,) = dacp.evaluate([parse_query(corpus(1, seed=4)[0])])
    assert log.verify().ok and log.count() == 22 and dacp.log.get(d.id).body["format"] == FORMAT
    assert dacp.logged_decision(dacp.log.get(d.id)) == d.to_json()


def test_an_old_log_edited_around_its_triggers_is_not_migrated(tmp_path):
    path = tmp_path / "v2.sqlite"
    shutil.copy(V2_LOG, path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER log_no_update")
        db.execute("UPDATE log SET body = replace(body, '\"eligible\":false', '\"eligible\":true') WHERE seq = 2")
        assert db.total_changes == 1
    with pytest.raises(StorageError, match="does not verify, so it is not migrated .*entry 2 .* was modified"):
        migrate(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'tree_chunks'").fetchone()[0] == 0 or \
            db.execute("SELECT COUNT(*) FROM tree_chunks").fetchone()[0] == 0


def test_the_old_chain_hashes_are_the_schemes_of_their_versions():
    """Scheme 1 hashed the canonical JSON object; scheme 2 a header line and the body bytes."""
    body = '{"a":1}'
    want = hashlib.sha256(json.dumps({"seq": 1, "entry_id": "e", "kind": "decision", "recorded_at": "t",
                                      "bundle_hash": None, "body": body, "prev_hash": "0" * 64},
                                     sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert legacy.entry_hash_v1(1, "e", "decision", "t", None, body, "0" * 64) == want
    header = json.dumps([1, "e", "decision", "t", None, "0" * 64], separators=(",", ":"))
    assert legacy.entry_hash_v2(1, "e", "decision", "t", None, body, "0" * 64) == \
        hashlib.sha256(b"dacp-log/2\n" + header.encode() + b"\n" + body.encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.one_of(st.none(), st.text()))
def test_the_old_header_encoding_is_plain_compact_json(entry_id, kind, bundle_hash):
    """Scheme 2's header is what json.dumps(separators=(",", ":"), ensure_ascii=False) writes."""
    fields = [7, entry_id, kind, "2026-11-20T14:00:00.000000Z", bundle_hash, "0" * 64]
    assert orjson.dumps(fields) == json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()


def test_an_unknown_old_scheme_is_refused(tmp_path):
    path = tmp_path / "v2.sqlite"
    shutil.copy(V2_LOG, path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '9' WHERE key = 'hash_scheme'")
    with pytest.raises(StorageError, match="hash scheme 9"):
        migrate(path)


@pytest.mark.parametrize("edit", [
    (b'"trace":[["bundle.in-force"', b'"trace":[[99999'),  # a rule the bundle does not have
    (b'"trace":[[', b'"trace":7,"was":[['),  # not a trace at all
    (b'"quantity":"', b'"quantity":"x'),  # not a number
])
def test_an_entry_edited_and_rehashed_around_the_triggers_is_a_storage_error_naming_it(tmp_path, edit):
    """The thorough attacker (entry re-hashed, the tree rebuilt, no checkpoint to contradict it) still
    cannot make a read serve an entry that does not decode: it names the decision."""
    path = tmp_path / "v2.sqlite"
    shutil.copy(V2_LOG, path)
    migrate(path)
    entry_id = list(DecisionLog(path).entries("decision"))[2].entry_id  # leaf 3 (after the migration record)
    edit_entry(path, 3, *edit)
    dacp = Dacp(Settings(policies=POLICIES, log=path, engine="python", approvals=DEMO_KEYS))
    with pytest.raises(StorageError, match=f"decision {entry_id}: its log entry cannot be read back"):
        dacp.explain(entry_id)
    nxt = list(dacp.log.entries("decision"))[3].entry_id
    assert "Rules evaluated:" in dacp.explain(nxt)


def test_new_databases_use_large_pages(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite")
    assert log.db.execute("PRAGMA page_size").fetchone()[0] == 65536


# -- the compact logged decision ---------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["python", "durable_rules"])
def test_every_logged_decision_reads_back_exactly(tmp_path, bundle, engine):
    dacp = dacp_for(tmp_path, bundle, engine)
    queries = [parse_query(d) for d in corpus(400, seed=9)]
    decisions = dacp.evaluate(queries)
    for d in decisions:
        assert dacp.logged_decision(dacp.log.get(d.id)) == d.to_json()


def test_the_compact_trace_is_the_inverse_of_the_public_one(bundle):
    dacp = Dacp(Settings(policies=POLICIES, log=":memory:", engine="python", approvals=DEMO_KEYS), bundle=bundle, log_enabled=False)
    for q in [parse_query(d) for d in corpus(200, seed=10)]:
        d = dacp.engine.decide(q)
        reasons = d.to_json()["reasons"]
        assert expand(compact(reasons, d.statics), d.statics) == reasons


def test_a_price_from_evidence_is_kept_in_the_entry(tmp_path, bundle):
    dacp = dacp_for(tmp_path, bundle)
    q = parse_query(corpus(1, seed=11)[0] | {"asset": "BTC"})
    ev = PriceEvidence(asset="BTC", price_usd=q.price_usd * 2, updated_at=q.as_of, source="file:test",
                       round_id=None)
    (d,) = dacp.evaluate([q], evidence=[[ev]])
    body = dacp.log.get(d.id).body
    assert body["format"] == FORMAT and body["decision"]["price_usd"] == d.to_json()["price_usd"] != body["query"]["price_usd"]
    assert dacp.logged_decision(dacp.log.get(d.id)) == d.to_json()


@pytest.mark.parametrize("written, shown", [("64000", "64000"), ("64000.50", "64000.50"), ("064000", "64000")])
def test_the_price_is_restored_whatever_form_the_query_wrote_it_in(tmp_path, bundle, written, shown):
    dacp = dacp_for(tmp_path, bundle)
    q = parse_query(corpus(1, seed=11)[0] | {"asset": "BTC", "price_usd": written})
    (d,) = dacp.evaluate([q])
    body = dacp.log.get(d.id).body
    assert d.to_json()["price_usd"] == shown
    assert ("price_usd" in body["decision"]) == (written != shown)  # kept only when the query's text differs
    assert dacp.logged_decision(dacp.log.get(d.id)) == d.to_json()


def test_a_decision_head_starts_with_the_keys_the_entry_restores(bundle):
    from rules.audit.entry_format import _KEYS

    engine = Dacp(Settings(policies=POLICIES, log=":memory:", engine="python", approvals=DEMO_KEYS), bundle=bundle, log_enabled=False).engine
    for q in [parse_query(d) for d in corpus(50, seed=17)]:
        assert tuple(engine.decide(q).head)[:len(_KEYS)] == tuple(k for k, _ in _KEYS)


def test_the_entry_leaves_out_what_the_entry_says_elsewhere(tmp_path, bundle):
    dacp = dacp_for(tmp_path, bundle)
    q = parse_query(corpus(1, seed=12)[0])
    (d,) = dacp.evaluate([q])
    logged = dacp.log.get(d.id).body["decision"]
    assert not {"decision_id", "account", "participant", "asset", "quantity", "as_of", "policy", "reasons"} & set(logged)
    assert json.loads(log_body(q, d))["decision"]["trace"] == json.loads(orjson.dumps(d.trace))
    assert json.loads(log_body(q, d))["query"] == q.raw  # the query as given, encoded when it was parsed


# -- streaming ---------------------------------------------------------------------------------------
def test_a_stream_logs_each_chunk_before_handing_it_out(tmp_path, bundle):
    dacp = dacp_for(tmp_path, bundle)
    queries = [parse_query(d) for d in corpus(250, seed=13)]
    seen, progress = [], []
    for chunk in dacp.evaluate_stream(queries, chunk=100, progress=progress.append):
        seen.extend(chunk)
        assert dacp.log.count() == len(seen)  # committed before it reached us
        assert all(dacp.log.get(d.id) for d in chunk)
    assert [len(seen), progress[-1]] == [250, 250] and progress == sorted(progress)
    assert dacp.log.verify().ok


def test_a_stream_stops_at_a_storage_failure(tmp_path, bundle):
    dacp = dacp_for(tmp_path, bundle)
    queries = [parse_query(d) for d in corpus(30, seed=14)]
    stream = dacp.evaluate_stream(queries, chunk=10)
    first = next(stream)
    dacp.log.db.db.execute("DROP TABLE tree_chunks")  # the storage goes away under it
    dacp.log.db.db.execute("CREATE TABLE log (x)")
    with pytest.raises(StorageError):
        next(stream)
    assert len(first) == 10


# -- ids and the collector -----------------------------------------------------------------------------
def test_decision_ids_are_uuid7_in_order():
    import uuid

    ids = [new_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    for i in ids[:: 997]:
        u = uuid.UUID(i)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == i


def test_ids_made_in_bulk_are_uuid7_in_order_and_after_the_ones_before():
    import uuid

    from rules.engine.ids import new_ids

    before = new_id()
    ids = new_ids(10000) + new_ids(3) + [new_id()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > before and new_ids(0) == []
    for i in ids[:: 499]:
        u = uuid.UUID(i)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and str(u) == i


def test_decision_ids_are_unique_across_threads():
    out: list[str] = []

    def work():
        out.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 20000


def test_the_collector_pause_nests_and_restores():
    import gc

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_the_public_json_bytes_are_the_public_decision(tmp_path, bundle):
    """What the CLI prints for a batch is exactly the public decision, however it is put together."""
    engine = Dacp(Settings(policies=POLICIES, log=tmp_path / "x.sqlite", engine="python", approvals=DEMO_KEYS), bundle=bundle).engine
    decisions = engine.decide_many([parse_query(d) for d in corpus(600, seed=15)])
    for d in decisions + decisions[:50]:  # the second time from the remembered entries
        assert d.to_json_bytes() == orjson.dumps(d.to_json())
    q = parse_query(corpus(1, seed=16)[0] | {"asset": "BTC"})
    ev = PriceEvidence(asset="BTC", price_usd=q.price_usd, updated_at=q.as_of, source="file:test")
    d = engine.decide(q, [ev], verification={"status": "failed", "reason": "node_unreachable", "message": "down"})
    assert d.to_json_bytes() == orjson.dumps(d.to_json())


def test_bad_input_anywhere_in_a_stream_means_nothing_decided_or_logged(tmp_path, bundle):
    """A query the bundle refuses as input (more decimal places than the asset has) in a late chunk
    stops the stream before the first chunk is decided: nothing is yielded, nothing is logged."""
    from rules.errors import InputError

    dacp = dacp_for(tmp_path, bundle)
    docs = [d for d in corpus(40, seed=18) if d["asset"] in bundle.assets]
    docs.append({**docs[0], "asset": "USDC", "quantity": "1.1234567", "portfolio": []})  # USDC has 6 places
    stream = dacp.evaluate_stream([parse_query(d) for d in docs], chunk=10)
    with pytest.raises(InputError, match="more decimal places than USDC has"):
        next(stream)
    assert not (tmp_path / "log.sqlite").exists() or dacp.log.count() == 0
