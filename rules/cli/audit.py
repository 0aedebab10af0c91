"""``dacp explain``, ``dacp replay`` and ``dacp audit ...``: the verifiable log for auditors.

``audit keygen`` makes the operator's checkpoint key; ``audit checkpoint`` signs the tree head; ``audit verify``
streams the whole log and, with ``--checkpoint``, proves it extends an older signed checkpoint; ``audit prove``
prints a receipt of one entry and ``audit check-receipt`` checks one offline, with no database; ``audit
migrate`` folds a hash-chained log of an earlier version into the tree.

Exit codes: 0 verified; 1 the log does not verify; 3 bad input; 5 storage; 8 a record or receipt was tampered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rules.app import Dacp, audit_signer, decision_log_exists
from rules.audit import entries
from rules.audit.checkpoint import Signer, Verifier
from rules.audit.migrate import migrate
from rules.audit.receipt import ReceiptError, check_receipt
from rules.cli.common import AddCommon, Handler, print_json, settings_from_args, write_new_file
from rules.errors import InputError


def add_explain(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("explain", help="show a logged decision's trace in plain words")
    p.add_argument("decision_id")
    p.add_argument("--json", action="store_true", help="print the stored entry as JSON")
    add_common(p)
    return {"explain": cmd_explain}


def add_replay(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("replay", help="re-evaluate a logged decision under its stored bundle and compare")
    p.add_argument("decision_id")
    add_common(p)
    return {"replay": cmd_replay}


def add_audit(sub: Any, add_common: AddCommon) -> dict[str, Handler]:
    p = sub.add_parser("audit", help="the verifiable log: verify, checkpoints, receipts, migration")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = asub.add_parser("verify", help="verify every entry, the tree, its checkpoints and the stored bundles")
    v.add_argument("--checkpoint", type=Path, help="a signed checkpoint recorded earlier: prove the log extends it")
    v.add_argument("--key", action="append", default=[], help="verifier key (text or file) the checkpoint is "
                   "signed with (repeat; settings [audit] public_keys and signing_key_file count too)")
    add_common(v)
    c = asub.add_parser("checkpoint", help="sign the tree head (origin, size, root) with the operator's key")
    c.add_argument("--out", type=Path, help="also write the signed note to this file")
    add_common(c)
    r = asub.add_parser("prove", help="a self-contained receipt of one entry (entry, audit path, checkpoint)")
    r.add_argument("decision_id")
    r.add_argument("--out", type=Path, help="write the receipt here instead of stdout")
    add_common(r)
    k = asub.add_parser("check-receipt", help="check a receipt offline (no database): signature and inclusion")
    k.add_argument("receipt", type=Path)
    k.add_argument("--key", action="append", required=True, help="verifier key (text or file) of the log's operator")
    k.add_argument("--origin", help="require the checkpoint to be of this log")
    g = asub.add_parser("keygen", help="make the operator's Ed25519 checkpoint key")
    g.add_argument("--out", type=Path, required=True, help="private key file to write (mode 0600)")
    g.add_argument("--name", default="dacp-operator", help="the key's name in signatures")
    m = asub.add_parser("migrate", help="verify a hash-chained log of an earlier version and fold it into the tree")
    add_common(m)
    return {"audit": cmd_audit}


def cmd_explain(args: argparse.Namespace) -> int:
    dacp = Dacp(settings_from_args(args))
    if args.json:
        e = dacp.reading_log.get(args.decision_id)  # read-only: a missing log is refused, never created
        body = dict(e.body)
        if isinstance(body.get("decision"), dict):  # the trace expanded with the stored bundle
            body["decision"] = dacp.logged_decision(e)
        print_json({"seq": e.seq, "recorded_at": e.recorded_at, "bundle": e.bundle_hash, "entry_hash": e.entry_hash,
                    **body})
    else:
        print(dacp.explain(args.decision_id))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    dacp = Dacp(settings_from_args(args))
    r = dacp.replay(args.decision_id, evaluator=args.engine)
    if r.identical:
        print(f"replay of {r.decision_id}: IDENTICAL (eligible={str(r.replayed['eligible']).lower()}, "
              f"collateral {r.replayed['collateral_value_usd']} USD, bundle {r.replayed['policy']['bundle']})")
        return 0
    print(f"replay of {r.decision_id}: DIFFERENT")
    for d in r.differences[:50]:
        print(f"  {d}")
    return 1


def cmd_audit(args: argparse.Namespace) -> int:
    return {"verify": _verify, "checkpoint": _checkpoint, "prove": _prove, "check-receipt": _check_receipt,
            "keygen": _keygen, "migrate": _migrate}[args.audit_command](args)


def _verify(args: argparse.Namespace) -> int:
    note = _read(args.checkpoint, "checkpoint") if args.checkpoint else None
    res = Dacp(settings_from_args(args)).verify_log(note, args.key)
    print(res.render())
    return 0 if res.ok else 1


def _checkpoint(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    note = Dacp(s).reading_log.checkpoint(audit_signer(s))
    if args.out:
        write_new_file(args.out, note)
    sys.stdout.write(note)
    return 0


def _prove(args: argparse.Namespace) -> int:
    receipt = Dacp(settings_from_args(args)).reading_log.prove(args.decision_id).to_json() + "\n"
    if args.out:
        write_new_file(args.out, receipt)
    else:
        sys.stdout.write(receipt)
    return 0


def _check_receipt(args: argparse.Namespace) -> int:
    keys = [Verifier.parse(_key_text(k)) for k in args.key]
    try:
        checked = check_receipt(_read(args.receipt, "receipt"), keys, origin=args.origin)
    except ReceiptError as e:  # keeps its own code (receipt_invalid), named by the file
        raise ReceiptError(e.check, f"{args.receipt}: {e.message}") from None
    kind, entry_id, at, bundle = entries.header_v1(checked.entry)
    print(f"receipt OK: entry {checked.index + 1} of {checked.checkpoint.size} in log {checked.checkpoint.origin}: "
          f"{kind} {entry_id} recorded {at}" + (f", bundle {bundle}" if bundle else "")
          + f"; signed by {', '.join(checked.signers)}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    signer = Signer.generate(args.name)
    write_new_file(args.out, signer.key_text() + "\n", private=True)
    print(f"signing key written to {args.out} (keep it secret; settings [audit] signing_key_file)")
    print(f"verifier key (give it to auditors): {signer.verifier().key_text()}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    if not decision_log_exists(s):
        raise InputError("no decision log here to migrate", str(s.log))
    print(migrate(s.log).render())
    return 0


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the {what}: {getattr(e, 'strerror', None) or e}", str(path)) from None


def _key_text(key: str) -> str:
    p = Path(key)
    return _read(p, "key").strip() if p.is_file() else key
