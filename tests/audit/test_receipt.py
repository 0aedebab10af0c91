"""Receipts (rules/audit/receipt.py): issued over a tree of random entries, checked offline, and every
kind of tampering refused with a message naming the check that failed."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.audit.checkpoint import Checkpoint, Signer, sign_checkpoint, sign_note
from rules.audit.merkle import InMemoryNodes, leaf_hash
from rules.audit.receipt import FORMAT, CheckedReceipt, Receipt, ReceiptError, check_receipt, make_receipt

ORIGIN = "dacp.example/decision-log"
LOG_KEY = Signer.generate(ORIGIN)
VERIFIERS = [LOG_KEY.verifier()]


def _log(entries: list[bytes]) -> tuple[InMemoryNodes, str]:
    tree = InMemoryNodes(leaf_hash(e) for e in entries)
    return tree, sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), [LOG_KEY])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=120), st.data())
def test_round_trip_over_random_entries(entries, data):
    tree, note = _log(entries)
    index = data.draw(st.integers(0, len(entries) - 1), "index")
    receipt = make_receipt(entries[index], index, note, tree.get_node)
    text = receipt.to_json()
    assert json.loads(text)["format"] == FORMAT and next(iter(json.loads(text))) == "format"
    assert Receipt.from_json(text) == receipt
    checked = check_receipt(text.encode(), VERIFIERS, origin=ORIGIN)
    assert checked == CheckedReceipt(entries[index], index, leaf_hash(entries[index]),
                                     Checkpoint(ORIGIN, len(entries), tree.root()), (ORIGIN,))


ENTRIES = [b'{"seq":%d,"kind":"decision"}' % i for i in range(23)]
TREE, NOTE = _log(ENTRIES)
GOOD = make_receipt(ENTRIES[9], 9, NOTE, TREE.get_node).to_dict()


_DROP = object()


def _with(**changes) -> str:
    obj = dict(GOOD)
    for k, v in changes.items():
        if v is _DROP:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj)


B64 = lambda b: base64.b64encode(b).decode()


def _flip_b64(s: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(s))
    raw[byte] ^= 1
    return B64(bytes(raw))


def test_good_receipt_checks():
    checked = check_receipt(json.dumps(GOOD), VERIFIERS)
    assert checked.entry == ENTRIES[9] and checked.index == 9 and checked.checkpoint.size == 23


BIGGER_TREE, BIGGER_NOTE = _log(ENTRIES + [b"more"])
OTHER_KEY = Signer.generate(ORIGIN)


@pytest.mark.parametrize("receipt, check, message", [
    # format
    ("not json", "format", "not JSON"),
    ("[1]", "format", "not a JSON object"),
    (_with(format="dacp-receipt/2"), "format", "format is 'dacp-receipt/2'"),
    (_with(format=_DROP), "format", "format is None"),
    (_with(proof=_DROP), "format", "missing field\\(s\\) proof"),
    (_with(note="x"), "format", "unknown field\\(s\\) note"),
    (json.dumps(GOOD)[:-1] + ',"index":9}', "format", "'index' appears twice"),
    (_with(index="9"), "format", "index must be a non-negative integer"),
    (_with(index=9.0), "format", "index must be a non-negative integer"),
    (_with(index=True), "format", "index must be a non-negative integer"),
    (_with(size=-1), "format", "size must be a non-negative integer"),
    (json.dumps(GOOD).replace('"size":23', '"size":NaN').replace('"size": 23', '"size": NaN'), "format",
     "NaN is not a JSON number"),
    ('{"format":"%s","index":%s}' % (FORMAT, "9" * 5000), "format", "not JSON"),  # too long an integer
    (_with(entry="%%%"), "format", "entry is not valid base64"),
    (_with(entry=GOOD["entry"][:-2] + ("B=" if GOOD["entry"][-2:] != "B=" else "C=")), "format",
     "entry is not"),
    (_with(entry=7), "format", "entry must be a base64 string"),
    (_with(proof="abc"), "format", "proof must be a list"),
    (_with(proof=GOOD["proof"][:1] + [B64(b"short")]), "format", "proof\\[1\\] is 5 bytes"),
    (_with(checkpoint=None), "format", "checkpoint must be the signed note"),
    # signature
    (_with(checkpoint=NOTE.replace("\n23\n", "\n24\n")), "signature", "does not verify"),
    (_with(checkpoint=NOTE.replace(ORIGIN + "\n", "dacp.example/other-log\n", 1)), "signature", "does not verify"),
    (_with(checkpoint=sign_checkpoint(Checkpoint(ORIGIN, 23, TREE.root()), [OTHER_KEY])), "signature",
     "not signed by any known key"),
    (_with(checkpoint=NOTE + "extra line\n"), "signature", "not a signature line"),
    (_with(checkpoint=NOTE.split("\n\n")[0] + "\n"), "signature", "no blank line"),
    # checkpoint
    (_with(checkpoint=sign_note("hello\n", [LOG_KEY])), "checkpoint", "1 line"),
    # size
    (_with(size=22), "size", "the receipt says tree size 22, its checkpoint 23"),
    (_with(index=23), "size", "leaf index 23 is outside a tree of 23"),
    (_with(checkpoint=BIGGER_NOTE), "size", "the receipt says tree size 23, its checkpoint 24"),
    # inclusion
    (_with(entry=B64(ENTRIES[9] + b" ")), "inclusion", "the entry is not leaf 9"),
    (_with(entry=B64(ENTRIES[8])), "inclusion", "does not lead to the root"),
    (_with(index=8), "inclusion", "not leaf 8"),
    (_with(index=20), "inclusion", "proof has 5 hashes; a proof for leaf 20 in a tree of 23 has 4"),
    (_with(proof=[_flip_b64(GOOD["proof"][0], 31)] + GOOD["proof"][1:]), "inclusion", "does not lead to the root"),
    (_with(proof=GOOD["proof"][:-1]), "inclusion", "proof has 4 hashes"),
    (_with(proof=GOOD["proof"] + [GOOD["proof"][0]]), "inclusion", "proof has 6 hashes"),
    (_with(proof=GOOD["proof"][::-1]), "inclusion", "does not lead to the root"),
    (_with(size=24, checkpoint=BIGGER_NOTE), "inclusion", "does not lead to the root of the tree of 24"),
])
def test_tampering_is_refused_naming_the_check(receipt, check, message):
    with pytest.raises(ReceiptError, match=message) as caught:
        check_receipt(receipt, VERIFIERS)
    assert caught.value.check == check
    assert str(caught.value).startswith(f"receipt failed the {check} check: ")


def test_origin_is_checked_when_named():
    assert check_receipt(json.dumps(GOOD), VERIFIERS, origin=ORIGIN).checkpoint.origin == ORIGIN
    with pytest.raises(ReceiptError, match="is for log 'dacp.example/decision-log', not 'other'") as caught:
        check_receipt(json.dumps(GOOD), VERIFIERS, origin="other")
    assert caught.value.check == "origin"


def test_receipt_bytes_must_be_utf8():
    with pytest.raises(ReceiptError, match="not valid UTF-8"):
        check_receipt(b"\xff" + json.dumps(GOOD).encode(), VERIFIERS)


def test_issuing_refuses_what_no_auditor_would_accept():
    with pytest.raises(ReceiptError, match="failed the inclusion check: inclusion proof of leaf 3"):
        make_receipt(ENTRIES[4], 3, NOTE, TREE.get_node)  # not that leaf's bytes
    with pytest.raises(ReceiptError) as caught:
        make_receipt(ENTRIES[3], 3, NOTE, lambda level, index: bytes(32))  # a store answering wrong nodes
    assert caught.value.check == "inclusion"
    with pytest.raises(ReceiptError) as caught:
        make_receipt(ENTRIES[3], 3, "no checkpoint\n\n\u2014 x AAAAAAA=\n", TREE.get_node)
    assert caught.value.check == "checkpoint"
    # A receipt for the one leaf of a one-entry log has an empty proof.
    tree, note = _log([b"only"])
    assert check_receipt(make_receipt(b"only", 0, note, tree.get_node).to_json(), VERIFIERS).index == 0
