"""A failed integrity check is never "retryable": each kind has its own code, exit 8 and HTTP 500, like
``record_tampered`` (docs/errors.md; tests/test_error_codes.py holds the table to the classes). Here: what
the CLI and an error body show for each, from a real log."""

from __future__ import annotations

import json

import pytest

from rules.audit import merkle
from rules.audit.checkpoint import CheckpointError, NoteError, Signer, open_checkpoint
from rules.audit.log import DecisionLog, LegacyLogError
from rules.audit.receipt import ReceiptError, check_receipt
from rules.audit.store import DictionaryError
from rules.cli.run import main
from rules.errors import StorageError, TamperedError

SIGNER = Signer.generate("test-operator")
OTHER = Signer.generate("test-operator")  # the same name, another key


@pytest.mark.parametrize("cls, code", [(merkle.ProofError, "proof_invalid"), (NoteError, "checkpoint_invalid"),
                                       (CheckpointError, "checkpoint_invalid"), (DictionaryError, "dictionary_invalid")])
def test_integrity_errors_have_their_own_code_exit_8_http_500_not_retryable(cls, code):
    e = cls("what failed")
    assert isinstance(e, TamperedError) and isinstance(e, StorageError)
    assert (e.code, e.exit_code, e.http_status, e.retryable) == (code, 8, 500, False)
    assert e.to_json() == {"code": code, "message": "what failed", "retryable": False}
    r = ReceiptError("inclusion", "does not lead to the root")
    assert (r.code, r.exit_code, r.retryable, r.check) == ("receipt_invalid", 8, False, "inclusion")
    legacy = LegacyLogError("run `dacp audit migrate`")
    assert (legacy.code, legacy.exit_code, legacy.http_status, legacy.retryable) == ("log_migration_required", 5,
                                                                                     503, False)
    assert (StorageError.code, StorageError.retryable) == ("storage_unavailable", True)  # the database busy, down


def test_a_proof_or_checkpoint_that_does_not_verify_says_so_with_its_code(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", origin="test/errors")
    log.append([("decision", f"e-{i}", None, {"i": i}) for i in range(20)])
    note = log.checkpoint(SIGNER)
    with pytest.raises(merkle.ProofError) as e:
        merkle.verify_inclusion(merkle.leaf_hash(b"x"), 3, 20, merkle.inclusion_proof(3, 20, log.tree.get_node),
                                log.tree.root(20))
    assert e.value.code == "proof_invalid"
    with pytest.raises(NoteError, match="not signed by any known key") as n:
        open_checkpoint(note, [OTHER.verifier()])
    assert n.value.code == "checkpoint_invalid"
    receipt = json.loads(log.prove("e-7").to_json())
    receipt["index"] = 8
    with pytest.raises(ReceiptError) as r:
        check_receipt(json.dumps(receipt), [SIGNER.verifier()])
    assert (r.value.code, r.value.check) == ("receipt_invalid", "inclusion")


def test_the_cli_exits_8_for_a_forged_checkpoint_and_a_tampered_receipt(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    log = DecisionLog(tmp_path / "log.sqlite", origin="test/cli")
    log.append([("decision", f"e-{i}", None, {"i": i}) for i in range(20)])
    forged = OTHER.key_text()  # the same key name, another key: what a forger would sign with
    (tmp_path / "forged.note").write_text(log.checkpoint(Signer.parse(forged)))
    log.append([("decision", "e-20", None, {"i": 20})])
    log.checkpoint(SIGNER)  # of size 21: the one a receipt is made under
    (tmp_path / "receipt.json").write_text(log.prove("e-3").to_json().replace('"index":3', '"index":4'))
    log.close()
    key = SIGNER.verifier().key_text()
    code = main(["audit", "verify", "--log", str(tmp_path / "log.sqlite"), "--checkpoint", "forged.note", "--key", key])
    out, err = capsys.readouterr()
    assert code == 8 and "Traceback" not in err and "not signed by any known key" in err, (out, err)
    code = main(["audit", "check-receipt", "receipt.json", "--key", key])
    out, err = capsys.readouterr()
    assert code == 8 and out == "" and "receipt failed the inclusion check" in err, (out, err)


def test_check_receipt_keeps_the_receipt_s_own_code(tmp_path, monkeypatch, capsys):
    """A refused receipt is receipt_invalid at the CLI door too (not the generic record_tampered)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DACP_CONFIG", raising=False)
    log = DecisionLog(tmp_path / "log.sqlite", origin="test/cli")
    log.append([("decision", f"e-{i}", None, {"i": i}) for i in range(5)])
    log.checkpoint(SIGNER)
    (tmp_path / "receipt.json").write_text(log.prove("e-1").to_json().replace('"index":1', '"index":2'))
    log.close()
    from rules.cli.run import build_parser

    args = build_parser("audit").parse_args(["audit", "check-receipt", "receipt.json", "--key",
                                             SIGNER.verifier().key_text()])
    with pytest.raises(ReceiptError) as refused:
        args.handler(args)
    assert refused.value.code == "receipt_invalid" and refused.value.exit_code == 8
    assert "receipt.json" in str(refused.value) and refused.value.check == "inclusion"
