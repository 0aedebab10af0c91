"""Four-eyes approval with signed bundles: what is refused, what counts, what is logged."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from rules.errors import InputError
from rules.lifecycle import approvals as ap
from rules.app import Dacp
from rules.cli.run import main
from rules.audit.log import DecisionLog
from rules.policy.loader import load_bundle
from rules.engine.query import load_query_text
from rules.settings import Settings
from tests.support import ROOT

POLICIES = ROOT / "policies"
BTC = ROOT / "examples" / "queries" / "btc-eligible.json"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture
def prog(tmp_path, monkeypatch):
    """A copy of the shipped bundle (without its approvals) with its own people and keys:
    alice (author, approver), bob (approver), carol (approver, publisher), dave (author, approver);
    mallory has a key that is not listed."""
    pol = tmp_path / "pol"
    pol.mkdir()
    for f in POLICIES.glob("*.yaml"):
        shutil.copy(f, pol / f.name)
    keys = tmp_path / "keys"
    keys.mkdir()
    people = {"alice": ["author", "approver"], "bob": ["approver"], "carol": ["approver", "publisher"],
              "dave": ["author", "approver"]}
    lines = ["kind: approvers", "approvers:"]
    for who, roles in people.items():
        raw = ap.generate_key(keys / f"{who}.pem")
        lines += [f"  - id: {who}", f"    name: {who.title()} Test", f"    roles: [{', '.join(roles)}]",
                  f"    public_key: {ap.public_key_text(raw)}"]
    ap.generate_key(keys / "mallory.pem")
    (pol / "approvals").mkdir()  # the signatures live below the policies; the trust root does not
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "approvers.yaml").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    for k in list(__import__("os").environ):
        if k.startswith("DACP_APPROVALS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("DACP_POLICIES", str(pol))
    monkeypatch.setenv("DACP_LOG", str(tmp_path / "log.sqlite"))
    monkeypatch.setenv("DACP_APPROVALS_APPROVERS", str(trust / "approvers.yaml"))

    class P:
        dir = pol
        approvers = trust / "approvers.yaml"
        log = tmp_path / "log.sqlite"
        sigs = pol / "approvals" / "signatures"

        @staticmethod
        def key(who: str) -> str:
            return str(keys / f"{who}.pem")

        @staticmethod
        def settings(**approvals) -> Settings:
            approvals = {"approvers": trust / "approvers.yaml", **approvals}
            return Settings(policies=pol, log=tmp_path / "log.sqlite", sections={"approvals": approvals})

        @staticmethod
        def bundle_hash() -> str:
            return load_bundle(pol).hash

    return P


def approve_fully(capsys, p) -> None:
    assert run(capsys, "policy", "submit", "--key", p.key("alice"))[0] == 0
    assert run(capsys, "policy", "approve", "--key", p.key("bob"))[0] == 0
    assert run(capsys, "policy", "approve", "--key", p.key("carol"))[0] == 0


def log_kinds(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [e.kind for e in DecisionLog(path).entries()]


# -- the shipped bundle ---------------------------------------------------------------------------
DEMO = {"approvals": {"demo_keys_in_policy_dir": True}}  # the shipped approvers file is inside policies/: DEMO keys


def test_the_shipped_bundle_carries_its_approvals():
    st = ap.assess(load_bundle(POLICIES).hash, Settings(policies=POLICIES, **DEMO))
    assert st.approved and st.active, ("the shipped bundle is not approved - after changing policies/*.yaml run "
                                       f"scripts/approve-shipped-bundle: {st.problems()}")
    assert st.authors == ["alice"] and st.counted == ["bob", "carol"]
    Dacp(Settings(policies=POLICIES, **DEMO), log_enabled=False).bundle  # no error


def test_demo_keys_match_the_shipped_approvers_file():
    approvers = ap.load_approvers(POLICIES / "approvals" / "approvers.yaml")
    for who in ("alice", "bob", "carol"):
        key = ap.load_private_key(ROOT / "examples" / "keys" / f"demo-{who}.pem")
        assert approvers.by_key(ap.raw_public(key)).id == who


# -- refused bundles ------------------------------------------------------------------------------
def test_an_unsigned_bundle_is_refused_by_the_api_and_the_cli_and_nothing_is_logged(prog, capsys):
    with pytest.raises(ap.ApprovalError, match="is not approved for use") as e:
        Dacp(prog.settings()).bundle
    assert "no signatures" in str(e.value)
    code, out, err = run(capsys, "evaluate", str(BTC))
    assert code == 7 and out == "" and "not approved" in err
    assert log_kinds(prog.log) == []


def test_a_bundle_with_quorum_is_active_and_decides(prog, capsys):
    approve_fully(capsys, prog)
    code, out, err = run(capsys, "evaluate", str(BTC))
    assert code == 0, err
    assert json.loads(out)["policy"]["bundle"] == prog.bundle_hash()
    code, out, _ = run(capsys, "policy", "status")
    assert code == 0 and "ACTIVE" in out


def test_a_signed_bundle_whose_policy_changed_is_refused(prog, capsys):
    approve_fully(capsys, prog)
    signed = prog.bundle_hash()
    hc = prog.dir / "haircuts.yaml"
    hc.write_text(hc.read_text().replace("floor: 0.20", "floor: 0.10"))
    with pytest.raises(ap.ApprovalError) as e:
        Dacp(prog.settings()).bundle
    assert "changed after they were signed" in str(e.value) and signed[:12] in str(e.value)
    code, _, err = run(capsys, "evaluate", str(BTC))
    assert code == 7 and "need approval again" in err
    # a comment or re-ordering is no change: the hash covers the content, not the text
    hc.write_text("# reviewed\n" + hc.read_text().replace("floor: 0.10", "floor: 0.20"))
    assert Dacp(prog.settings()).bundle.hash == signed


def test_a_tampered_signature_file_is_refused(prog, capsys):
    approve_fully(capsys, prog)
    f = prog.sigs / prog.bundle_hash() / "bob.approval.json"
    rec = json.loads(f.read_text())
    rec["signed_at"] = "2030-01-01T00:00:00Z"
    f.write_text(json.dumps(rec))
    with pytest.raises(ap.ApprovalError, match="does not verify"):
        Dacp(prog.settings()).bundle


def test_a_signature_moved_to_another_bundle_is_refused(prog, capsys):
    approve_fully(capsys, prog)
    h = prog.bundle_hash()
    hc = prog.dir / "haircuts.yaml"
    hc.write_text(hc.read_text().replace("floor: 0.20", "floor: 0.10"))
    shutil.copytree(prog.sigs / h, prog.sigs / prog.bundle_hash())
    with pytest.raises(ap.ApprovalError, match="misfiled or altered"):
        Dacp(prog.settings()).bundle


def test_a_signature_by_an_unknown_key_is_refused(prog, capsys):
    code, _, err = run(capsys, "policy", "submit", "--key", prog.key("mallory"))
    assert code == 7 and "not in the approvers file" in err
    approve_fully(capsys, prog)
    # mallory forges a record with her own key under carol's name
    mallory = ap.load_private_key(Path(prog.key("mallory")))
    h = prog.bundle_hash()
    at = "2026-01-01T00:00:00Z"
    rec = {"format": ap.FORMAT, "role": "approver", "bundle": h, "signer": "carol", "signed_at": at,
           "public_key": ap.public_key_text(ap.raw_public(mallory)),
           "signature": __import__("base64").b64encode(mallory.sign(ap.statement("approver", h, "carol", at))).decode()}
    (prog.sigs / h / "carol.approval.json").write_text(json.dumps(rec))
    with pytest.raises(ap.ApprovalError, match="unknown key"):
        Dacp(prog.settings()).bundle


def test_removing_a_person_from_the_approvers_file_revokes_their_signatures(prog, capsys):
    approve_fully(capsys, prog)
    f = prog.approvers
    text = f.read_text()
    start = text.index("  - id: carol")
    end = text.index("  - id: dave")
    f.write_text(text[:start] + text[end:])
    with pytest.raises(ap.ApprovalError, match="unknown key"):
        Dacp(prog.settings()).bundle


def test_the_same_approver_twice_counts_once(prog, capsys):
    assert run(capsys, "policy", "submit", "--key", prog.key("alice"))[0] == 0
    assert run(capsys, "policy", "approve", "--key", prog.key("bob"))[0] == 0
    code, _, err = run(capsys, "policy", "approve", "--key", prog.key("bob"))
    assert code == 3 and "already signed" in err
    st = ap.assess(prog.bundle_hash(), prog.settings())
    assert st.counted == ["bob"] and not st.approved
    assert "it needs 2 approvals by distinct approvers who are not its author; it has 1 (bob)" in st.problems()
    # a copy of bob's approval under another name does not make a second approver: it is refused outright
    d = prog.sigs / prog.bundle_hash()
    shutil.copy(d / "bob.approval.json", d / "carol.approval.json")
    with pytest.raises(ap.ApprovalError, match="does not match its signer"):
        Dacp(prog.settings()).bundle


def test_the_author_cannot_approve_their_own_bundle(prog, capsys):
    assert run(capsys, "policy", "submit", "--key", prog.key("alice"))[0] == 0
    code, _, err = run(capsys, "policy", "approve", "--key", prog.key("alice"))
    assert code == 7 and "is the author" in err
    assert run(capsys, "policy", "approve", "--key", prog.key("bob"))[0] == 0
    # a hand-made approval by the author verifies, but does not count
    approvers = ap.load_approvers(prog.approvers)
    rec = ap.sign(prog.bundle_hash(), "approver", ap.load_private_key(Path(prog.key("alice"))), approvers)
    ap.write_signature(prog.sigs, rec)
    st = ap.assess(prog.bundle_hash(), prog.settings())
    assert st.counted == ["bob"] and not st.approved
    assert any(s.note and "author" in s.note for s in st.signatures)
    code, out, _ = run(capsys, "policy", "status")
    assert code == 1 and "NOT APPROVED" in out and "cannot approve it" in out


def test_approval_needs_an_author_first_and_roles_are_enforced(prog, capsys):
    code, _, err = run(capsys, "policy", "approve", "--key", prog.key("bob"))
    assert code == 7 and "no author yet" in err
    code, _, err = run(capsys, "policy", "submit", "--key", prog.key("bob"))
    assert code == 7 and "may not sign as author" in err
    assert list(prog.sigs.glob("*/*")) == [] if prog.sigs.exists() else True
    assert log_kinds(prog.log) == []


def test_quorum_is_configurable(prog, capsys):
    assert run(capsys, "policy", "submit", "--key", prog.key("alice"))[0] == 0
    assert run(capsys, "policy", "approve", "--key", prog.key("bob"))[0] == 0
    assert not ap.assess(prog.bundle_hash(), prog.settings()).approved
    assert ap.assess(prog.bundle_hash(), prog.settings(quorum=1)).approved
    Dacp(prog.settings(quorum=1)).bundle
    assert run(capsys, "policy", "approve", "--key", prog.key("carol"))[0] == 0
    with pytest.raises(ap.ApprovalError, match="needs 3 approvals"):
        Dacp(prog.settings(quorum=3)).bundle


def test_publication_requires_approval_and_can_be_required(prog, capsys):
    assert run(capsys, "policy", "submit", "--key", prog.key("alice"))[0] == 0
    code, _, err = run(capsys, "policy", "publish", "--key", prog.key("carol"))
    assert code == 7 and "not approved, so it cannot be published" in err
    assert run(capsys, "policy", "approve", "--key", prog.key("bob"))[0] == 0
    assert run(capsys, "policy", "approve", "--key", prog.key("carol"))[0] == 0
    with pytest.raises(ap.ApprovalError, match="not published"):
        Dacp(prog.settings(require_publication=True)).bundle
    code, _, err = run(capsys, "policy", "publish", "--key", prog.key("bob"))
    assert code == 7 and "may not sign as publisher" in err
    code, out, _ = run(capsys, "policy", "publish", "--key", prog.key("carol"))
    assert code == 0 and "published" in out
    Dacp(prog.settings(require_publication=True)).bundle


def test_every_approval_and_publication_is_in_the_decision_log(prog, capsys):
    approve_fully(capsys, prog)
    assert run(capsys, "policy", "publish", "--key", prog.key("carol"))[0] == 0
    assert log_kinds(prog.log) == ["policy_submission", "policy_approval", "policy_approval", "policy_publication"]
    with DecisionLog(prog.log) as log:
        entries = list(log.entries())
        h = prog.bundle_hash()
        assert all(e.bundle_hash == h and e.body["bundle"] == h for e in entries)
        assert [e.body["signer"] for e in entries] == ["alice", "bob", "carol", "carol"]
        assert all(e.body["signed_at"].endswith("Z") for e in entries)
        assert entries[-1].body["approvals"] == ["bob", "carol"] and entries[-1].body["authors"] == ["alice"]
        assert log.bundle(h).hash == h  # the approved bundle is stored: diff and replay can use it
        assert log.verify().ok
    code, out, _ = run(capsys, "policy", "status", "--json")
    st = json.loads(out)
    assert code == 0 and st["active"] and st["logged"]["policy_approval"] == 2


def test_preparing_commands_work_on_an_unapproved_bundle(prog, capsys):
    assert run(capsys, "validate")[0] == 0
    assert run(capsys, "test", str(POLICIES / "tests"))[0] == 0
    assert run(capsys, "bundle", "show")[0] == 0
    assert run(capsys, "bundle", "compile")[0] == 0
    assert run(capsys, "diff", str(POLICIES))[0] == 0
    code, _, err = run(capsys, "evaluate", "--no-log", str(BTC))
    assert code == 7 and "not approved" in err


def test_enforcement_can_be_switched_off_explicitly(prog, capsys, monkeypatch):
    Dacp(prog.settings(required=False)).bundle
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "false")
    assert run(capsys, "evaluate", "--no-log", str(BTC))[0] == 0
    monkeypatch.setenv("DACP_APPROVALS_REQUIRED", "maybe")
    code, _, err = run(capsys, "evaluate", "--no-log", str(BTC))
    assert code == 3 and "true or false" in err


@pytest.mark.parametrize("settings,words", [
    ({"quorum": 0}, "at least 1"), ({"quorum": "two"}, "whole number"), ({"requried": False}, "unknown settings"),
    ({"approvers_sha256": "abc"}, "sha256"),
])
def test_bad_approval_settings_are_clear_errors(prog, settings, words):
    with pytest.raises(InputError, match=words):
        Dacp(prog.settings(**settings)).bundle


def test_a_pinned_approvers_file_that_changed_is_refused(prog, capsys):
    approve_fully(capsys, prog)
    digest = ap.load_approvers(prog.approvers).sha256
    Dacp(prog.settings(approvers_sha256=digest)).bundle
    with pytest.raises(ap.ApprovalError, match="it was changed"):
        Dacp(prog.settings(approvers_sha256="0" * 64)).bundle


def test_a_missing_or_broken_approvers_file_fails_closed(prog, capsys):
    f = prog.approvers
    text = f.read_text()
    f.unlink()
    with pytest.raises(ap.ApprovalError, match="does not exist"):
        Dacp(prog.settings()).bundle
    f.write_text(text.replace("roles: [approver]", "roles: [boss]"))
    with pytest.raises(ap.ApprovalError, match="roles is a list"):
        Dacp(prog.settings()).bundle
    f.write_text(text + text[text.index("  - id: bob"):])
    with pytest.raises(ap.ApprovalError, match="listed twice"):
        Dacp(prog.settings()).bundle


def test_keygen_never_overwrites_and_prints_the_entry(tmp_path, capsys):
    out = tmp_path / "k.pem"
    code, text, _ = run(capsys, "policy", "keygen", "--out", str(out), "--id", "j.doe", "--name", "Jane Doe",
                        "--roles", "approver")
    assert code == 0 and "public_key: ed25519:" in text and (out.stat().st_mode & 0o077) == 0
    code, _, err = run(capsys, "policy", "keygen", "--out", str(out), "--id", "j.doe", "--name", "x")
    assert code == 3 and "never overwritten" in err


def test_an_injected_bundle_is_checked_too(prog):
    """The ledger and the HTTP service hand Dacp their bundle: the check is the same."""
    bundle = load_bundle(prog.dir)
    with pytest.raises(ap.ApprovalError):
        Dacp(prog.settings(), bundle=bundle).bundle
    q = load_query_text(BTC.read_text(), "btc")
    with pytest.raises(ap.ApprovalError):
        Dacp(prog.settings(), bundle=bundle, log_enabled=False).evaluate([q])


def _self_approved_copy(tmp_path, capsys):
    """The measured attack: a copy of the shipped policies whose writer lowers the BTC haircut, adds three keys
    of their own (dacp policy keygen) to the approvers file inside the policy directory and signs the change."""
    pol = tmp_path / "attack"
    shutil.copytree(POLICIES, pol, ignore=shutil.ignore_patterns("tests", "signatures"))
    h = pol / "haircuts.yaml"
    h.write_text(h.read_text().replace("floor: 0.20", "floor: 0.05", 1))
    keys = {}
    for who, roles in {"eve": "author", "eve2": "approver", "eve3": "approver"}.items():
        keys[who] = tmp_path / f"{who}.pem"
        code, entry, _ = run(capsys, "policy", "keygen", "--out", str(keys[who]), "--id", who, "--name", who,
                             "--roles", roles)
        assert code == 0
        with open(pol / "approvals" / "approvers.yaml", "a") as f:
            f.write(entry[entry.index("  - id:"):] if "  - id:" in entry else entry)
    return pol, keys


def test_an_approvers_file_inside_the_policy_directory_is_refused_unless_the_demo_switch_says_so(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no dacp.toml here (the repository's sets the demo switch)
    for k in list(__import__("os").environ):
        if k.startswith("DACP_"):
            monkeypatch.delenv(k)
    pol, keys = _self_approved_copy(tmp_path, capsys)
    monkeypatch.setenv("DACP_POLICIES", str(pol))
    monkeypatch.setenv("DACP_LOG", str(tmp_path / "log.sqlite"))
    monkeypatch.setenv("DACP_APPROVALS_DEMO_KEYS_IN_POLICY_DIR", "true")  # only so the attacker can sign at all
    assert run(capsys, "policy", "submit", str(pol), "--key", str(keys["eve"]))[0] == 0
    for who in ("eve2", "eve3"):
        assert run(capsys, "policy", "approve", str(pol), "--key", str(keys[who]))[0] == 0
    assert run(capsys, "evaluate", "--no-log", str(BTC))[0] == 0  # with the demo switch: self-approved
    monkeypatch.delenv("DACP_APPROVALS_DEMO_KEYS_IN_POLICY_DIR")
    code, out, err = run(capsys, "evaluate", str(BTC))
    assert code == 7 and out == "" and "inside the policy directory" in err and "demo_keys_in_policy_dir" in err
    assert not (tmp_path / "log.sqlite").exists() or DecisionLog(tmp_path / "log.sqlite").count() == 3
    settings = Settings(policies=pol, log=tmp_path / "log2.sqlite")
    with pytest.raises(ap.ApprovalError, match="inside the policy directory"):
        Dacp(settings).bundle  # evaluate, credit (rules.ledger via Dacp) and serve all take the bundle here
    from rules.http.app import create_app
    with pytest.raises(ap.ApprovalError, match="inside the policy directory"):
        create_app(settings)
    st = ap.assess(load_bundle(pol).hash, settings)
    assert not st.active and "inside the policy directory" in st.problems()[0]
