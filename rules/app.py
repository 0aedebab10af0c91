"""The composition root: every door (CLI, HTTP, Python) gets its parts here.

``Dacp`` is the engine with its settings (bundle, evaluator, decision log): evaluate with logging, explain,
replay, verify. The functions at the end wire settings to the adapters (custody verifier, price reader,
ledger store) and to the ledger, so that no door builds them itself or borrows another door's helpers.
Adapters are imported inside those functions, for start-up time: a query without ``--verify`` never loads
web3.
"""

from __future__ import annotations

import sqlite3
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from adapters.storage.sql import is_postgres, normalise_target
from rules.evidence import (CustodyEvidence, Holdings, PriceEvidence, custody_from_json, holdings_from_json,
                            holdings_lines_json, price_from_json)
from rules.engine.decide import Decision, Engine
from rules.errors import EvidenceError, InputError, StorageError
from rules.audit.log import DecisionLog, Entry
from rules.audit.replay_diff import ReplayResult, comparable, diff_decisions  # noqa: F401 (rules.app API)
from rules.audit.explain import explain_decision
from rules.collector import gc_paused
from rules.audit.entry_format import log_body, public_decision
from rules.policy.model import Bundle
from rules.policy.loader import load_bundle
from rules.engine.query import Query, parse_query
from rules.lifecycle.approvals.status import require_approved
from rules.settings import Settings

if TYPE_CHECKING:
    from rules.audit.checkpoint import Signer, Verifier
    from rules.audit.verify import VerifyResult
    from rules.ledger.store import LedgerStore
    from rules.margin.book import MarginBook
    from rules.margin.coverage import Coverage

Evidence = CustodyEvidence | PriceEvidence


def unknown_restrictions(asset: Any, custody: Any) -> dict[str, str]:
    """The token restrictions verification could not read, each with why (its checks fail closed): the
    ones the policy keeps off-chain, and the views that reverted or are missing from the contract."""
    out = {kind: f"off-chain: {why}" for kind, why in getattr(asset, "off_chain", {}).items()}
    reads = custody.details.get("restriction_reads") or {} if custody.chain == "ethereum" else {}
    for kind, read in reads.items():
        if read.get("unreadable"):
            out[kind] = read["unreadable"]
    return out


class Dacp:
    """The engine with its settings: bundle, evaluator and decision log."""

    def __init__(self, settings: Settings, *, bundle: Bundle | None = None, log_enabled: bool = True,
                 verifier: Any = None, prices: Any = None, require_approval: bool = True):
        self.settings = settings
        self._bundle = bundle
        self.log_enabled = log_enabled
        # False only for what prepares a change (validate, test, bundle show/compile): every door that decides
        # keeps the default, and an unapproved bundle is refused.
        self.require_approval = require_approval
        self.verifier = verifier  # adapters.custody.CustodyVerifier (injected by the doors; rules/ never imports chains)
        self.prices = prices  # adapters.custody.PriceReader: on-chain or file prices replace the query's
        self._stored: dict[str, Bundle] = {}
        self._ledger_store: "LedgerStore | None" = None

    @cached_property
    def bundle(self) -> Bundle:
        bundle = self._bundle or load_bundle(self.settings.policies)
        if self.require_approval:
            require_approved(bundle, self.settings)  # unapproved, unknown key or changed since signed: refused
        return bundle

    @cached_property
    def engine(self) -> Engine:
        return Engine.for_bundle(self.bundle, self.settings.engine)

    @cached_property
    def log(self) -> DecisionLog:
        """The log decisions are written to (created on first use)."""
        return DecisionLog(self.settings.log, origin=self.settings.audit.origin)

    def log_exists(self) -> bool:
        return decision_log_exists(self.settings)

    @cached_property
    def reading_log(self) -> DecisionLog:
        """The log, for commands that only read it: one that does not exist yet is an error, never created."""
        if not decision_log_exists(self.settings):
            raise InputError(f"no decision log at {self.settings.log}: nothing has been logged there yet", "log")
        return self.log

    @property
    def ledger_store(self) -> "LedgerStore | None":
        """The ledger whose holdings eligibility queries are decided with (settings ``[ledger] url``, or the
        decision log's database when it holds a ledger); None while there is none (nothing is created; asked
        again next time, so a ledger made since - a first credit - counts from then on)."""
        if self._ledger_store is None:
            url = ledger_url(self.settings)
            if "log" in self.__dict__ and url == normalise_target(self.settings.log):
                found = holds_ledger(self.log.db)  # the log's own connection: no connection opened per query
            else:
                found = ledger_exists(url)
            if found:
                self._ledger_store = open_ledger_store(self.settings, create=False)
        return self._ledger_store

    def holdings_for(self, queries: Sequence[Query]) -> list[Holdings | None] | None:
        """The holdings each query is decided with: the ledger's own (the account's, its customer's, its
        FCM's, the programme's) whenever a ledger is configured; a query that brings a ``portfolio`` is the caller's
        what-if (None here: the engine decides it on that portfolio and flags it ``what-if``). None for all
        when there is no ledger."""
        store = self.ledger_store
        if store is None and self.settings.ledger.url is None:
            return None
        from rules.ledger.positions import ledger_holdings  # here, for start-up time

        positions, named = (store.positions(), store.customers()) if store is not None else ([], {})
        return [None if q.portfolio else ledger_holdings(positions, q.account, q.participant, as_of=q.as_of,
                                                         customer=named.get(q.account), customers=named) for q in queries]

    def evaluate(self, queries: Sequence[Query], evidence: Sequence[Sequence[Evidence]] | None = None,
                 progress: Any = None, verify: bool = False,
                 gathered: Sequence[tuple[list[Evidence], dict[str, Any]]] | None = None) -> list[Decision]:
        """Decide every query, then append them all to the log in one transaction. Limits count the ledger's
        holdings whenever a ledger is configured (``holdings_for``); a query's ``portfolio`` is a what-if.

        With ``verify``, custody is verified on-chain through the verifier first; its evidence replaces
        the query's custody claims and is stored with the decision. A verification that fails makes
        the decision ineligible with the reason (it is not an error of the whole batch). ``gathered``: that
        verification already made (``gather``, one per query: ``dacp serve`` reads the chains off the
        decision worker), decided as ``verify`` would."""
        with gc_paused():  # the batch and its log entries stay alive until logged: see rules.collector
            return self._evaluate(queries, evidence, progress, verify, gathered=gathered)

    def gather(self, q: Query) -> tuple[list[Evidence], dict[str, Any]]:
        """``q``'s on-chain evidence and how its verification went (chain I/O only: no log, no engine)."""
        ev: list[Evidence] = []
        return ev, self.verify_custody(q, ev)

    def evaluate_stream(self, queries: Sequence[Query], chunk: int = 10_000,
                        evidence: Sequence[Sequence[Evidence]] | None = None, progress: Any = None,
                        verify: bool = False) -> Iterator[list[Decision]]:
        """``evaluate`` a large batch ``chunk`` queries at a time: each chunk is decided, committed to
        the log in one transaction, and only then yielded (no decision leaves unlogged).

        The cyclic garbage collector stays paused until the stream ends, so a consumer that writes each
        chunk out and drops it frees the decisions before the collector would ever walk them (see
        ``rules.collector``). A storage failure stops the stream: the chunks yielded before it are logged,
        none after it is decided."""
        if chunk < 1:
            raise InputError("the chunk size must be at least 1", "chunk")
        self.engine.check_inputs(queries)  # bad input means nothing decided, not the chunks before it
        done = 0
        with gc_paused():
            for start in range(0, len(queries), chunk):
                part = queries[start:start + chunk]
                ev = evidence[start:start + chunk] if evidence else None
                step = (lambda n, base=done: progress(base + n)) if progress else None
                decisions = self._evaluate(part, ev, step, verify, checked=True)
                done += len(part)
                yield decisions
                del decisions

    def _evaluate(self, queries: Sequence[Query], evidence: Sequence[Sequence[Evidence]] | None,
                  progress: Any, verify: bool, checked: bool = False,
                  gathered: Sequence[tuple[list[Evidence], dict[str, Any]]] | None = None) -> list[Decision]:
        engine = self.engine
        if not checked:
            engine.check_inputs(queries)  # before any node or ledger is read
        held = self.holdings_for(queries)
        if verify or gathered is not None:  # one by one: each reads the chain (or has read it), then is decided
            decisions = []
            for i, q in enumerate(queries):
                if gathered is not None:
                    ev, verification = list(gathered[i][0]), gathered[i][1]
                else:
                    ev = list(evidence[i]) if evidence else []
                    verification = self.verify_custody(q, ev)
                decisions.append(engine.decide(q, ev, verification=verification,
                                               holdings=held[i] if held else None))
                if progress:
                    progress(i + 1)
        else:
            decisions = engine.decide_many(queries, evidence, progress=progress, checked=True, holdings=held)
        if self.log_enabled:
            self.log.append(self._records(queries, decisions, held))
        return decisions

    def verify_custody(self, q: Query, evidence: list[Evidence]) -> dict[str, Any]:
        """Gather on-chain custody evidence for ``q`` into ``evidence``; report how it went."""
        if self.verifier is None:
            raise InputError("on-chain verification asked for, but no verifier is configured", "verify")
        asset = self.bundle.assets.get(q.asset)
        if asset is None:
            return {"status": "failed", "reason": "unknown_asset", "message": f"{q.asset} is not in the registry"}
        try:
            custody = self.verifier.verify(asset, q.custody.get("addresses", []))
            evidence.append(custody)
            if self.prices is not None and self.prices.configured:
                evidence.append(self.prices.read(asset))
        except EvidenceError as e:
            return {"status": "failed", "reason": e.reason, "message": e.message}
        unknown = unknown_restrictions(asset, custody)
        return {"status": "verified", "restrictions_unknown": unknown} if unknown else {"status": "verified"}

    def _records(self, queries: Sequence[Query], decisions: Sequence[Decision],
                 held: Sequence[Holdings | None] | None = None) -> list[tuple]:
        bundle = self.bundle
        if not held:
            return [("decision", d.id, bundle, log_body(q, d)) for q, d in zip(queries, decisions)]
        return [("decision", d.id, bundle, log_body(q, d, None if h is None else holdings_lines_json(h)))
                for q, d, h in zip(queries, decisions, held)]

    def logged_decision(self, entry: Entry) -> dict[str, Any]:
        """A logged decision in its public form (restored from its entry and the stored bundle)."""
        return public_decision(entry.body, entry.entry_id, self.stored_bundle(entry.bundle_hash or ""))

    def stored_bundle(self, bundle_hash: str) -> Bundle:
        """The bundle a logged decision was made under (from the log, checked against its hash)."""
        if self._bundle is not None and self._bundle.hash == bundle_hash:
            return self._bundle
        found = self._stored.get(bundle_hash)
        if found is None:
            found = self._stored[bundle_hash] = self.reading_log.bundle(bundle_hash)
        return found

    def explain(self, decision_id: str) -> str:
        entry = self.reading_log.get(decision_id)
        return explain_decision(self.logged_decision(entry), recorded_at=entry.recorded_at, seq=entry.seq)

    def replay(self, decision_id: str, evaluator: str | None = None) -> ReplayResult:
        entry = self.reading_log.get(decision_id)
        bundle = self.stored_bundle(entry.bundle_hash or "")
        original = self.logged_decision(entry)
        engine = Engine.for_bundle(bundle, evaluator or original.get("engine", "durable_rules"))
        evidence = [evidence_from_json(e) for e in original.get("evidence", [])]
        held = entry.body.get("holdings")  # the ledger's holdings it was decided with (rules.evidence)
        replayed = engine.decide(parse_query(entry.body["query"]), evidence, decision_id=original["decision_id"],
                                 verification=original.get("verification"),
                                 holdings=holdings_from_json(held) if isinstance(held, dict) else None).to_json()
        # what the entry recorded is compared; fields a later engine adds to decisions are not differences
        diffs = diff_decisions(comparable(original), comparable(replayed), recorded_only=True)
        return ReplayResult(decision_id, not diffs, original, replayed, diffs)

    # -- margin coverage (rules.margin; docs/margin.md) -----------------------------------------------
    def withdrawal_guard(self, store: "LedgerStore") -> Any:
        """The margin check of withdrawals on ``store`` (``Ledger.from_dacp`` wires it; None without a margin
        policy in the bundle)."""
        from rules.margin.book import withdrawal_guard  # here, for start-up time

        return withdrawal_guard(self.bundle, store)

    def margin_book(self, ledger: str | None = None) -> "MarginBook":
        """Margin coverage on the ledger's database (``ledger``: ``--ledger``, else settings)."""
        from rules.margin.book import MarginBook

        return MarginBook(self.bundle, open_ledger_store(self.settings, ledger))

    def margin_import(self, path: Path, ledger: str | None = None) -> dict[str, Any]:
        """Import a requirements file (CSV or JSON: ``rules.margin.inputs``); one log entry."""
        from rules.margin.inputs import parse_file
        from rules.margin.policy import margin_policy

        parsed = parse_file(path, margin_policy(self.bundle))  # every record checked before the ledger is opened
        return self.margin_book(ledger).import_requirements(parsed)

    def margin_coverage(self, account: str | None = None, as_of: Any = None,
                        ledger: str | None = None) -> list["Coverage"]:
        """Each account's coverage (or ``account``'s), now or as of ``as_of`` (a datetime)."""
        return self.margin_book(ledger).coverage(account, as_of)

    def verify_log(self, checkpoint: str | None = None, keys: Sequence[str] = ()) -> VerifyResult:
        """Verify the whole log (streaming): against its stored checkpoints and, if given, an older signed
        ``checkpoint`` note, checked with the configured and the given verifier ``keys``."""
        return self.reading_log.verify(checkpoint, audit_verifiers(self.settings, keys))


def evidence_from_json(d: dict[str, Any]) -> Evidence:
    return custody_from_json(d) if d.get("kind") == "custody" else price_from_json(d)


# -- wiring: settings -> adapters and ledger (the doors call these, never each other's helpers) ---------
def decision_log_exists(settings: Settings) -> bool:
    """Whether there is a decision log to read: a PostgreSQL log's tables are made on first use, a SQLite log is
    a file that exists (opening a missing one would create it)."""
    return is_postgres(settings.log) or Path(settings.log).exists()


def audit_signer(settings: Settings) -> Signer:
    """The operator's checkpoint signing key (settings ``[audit] signing_key_file``)."""
    from rules.audit.checkpoint import Signer  # here: cryptography loads only to sign or check a checkpoint

    path = settings.audit.signing_key_file
    if path is None:
        raise InputError("signing a checkpoint needs the operator's key: settings [audit] signing_key_file "
                         "(`dacp audit keygen --out FILE` makes one)", "[audit] signing_key_file")
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as e:
        raise InputError(f"cannot read the signing key: {e.strerror or e}", str(path)) from None
    try:
        return Signer.parse(text)
    except ValueError as e:
        raise InputError(f"not a signing key: {e}", str(path)) from None


def audit_verifiers(settings: Settings, keys: Sequence[str] = ()) -> list[Verifier]:
    """The verifier keys checkpoints are checked with: ``keys`` given (text or files), settings ``[audit]
    public_keys``, and the public half of the configured signing key."""
    from rules.audit.checkpoint import Verifier  # here: cryptography loads only to sign or check a checkpoint

    out: list[Verifier] = []
    for text in [*keys, *settings.audit.public_keys]:
        where = "key"
        if Path(text).is_file():
            where, text = text, Path(text).read_text(encoding="utf-8").strip()
        try:
            out.append(Verifier.parse(text))
        except ValueError as e:
            raise InputError(f"not a verifier key ({e})", where) from None
    if settings.audit.signing_key_file is not None and Path(settings.audit.signing_key_file).expanduser().is_file():
        out.append(audit_signer(settings).verifier())
    return out


def ledger_url(settings: Settings, override: str | None = None) -> str:
    """The ledger's database: ``override`` (``--ledger``), else settings ``[ledger] url``, else the log."""
    return normalise_target(override or settings.ledger.url or settings.log)


def holds_ledger(db: Any) -> bool:
    """Whether the open database ``db`` (``adapters.storage.sql.Database``) holds a ledger: ``ledger_exists``
    on a connection already open (the decision log's, when the ledger shares its database)."""
    sql = ("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_meta'" if db.kind == "sqlite"
           else "SELECT 1 WHERE to_regclass('ledger_meta') IS NOT NULL")
    return db.execute(sql).fetchone() is not None


def ledger_exists(url: str) -> bool:
    """Whether the database ``url`` holds a ledger, found without creating anything (a SQLite file is opened
    read-only; the ledger's store is imported only for PostgreSQL, for start-up time)."""
    if is_postgres(url):
        from rules.ledger.store import LedgerStore

        try:
            LedgerStore(url, create=False).close()
        except InputError:
            return False
        return True
    path = Path(url[len("sqlite:///"):] if url.startswith("sqlite:///") else url)
    if not path.is_file():
        return False
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger_meta'"
                               ).fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error as e:
        raise StorageError(f"{path}: cannot be read ({e})") from None


def open_ledger_store(settings: Settings, override: str | None = None, *, create: bool = True) -> "LedgerStore":
    """The ledger's store on ``ledger_url``. ``create=False`` (read-only commands): a ledger that does not
    exist is an ``InputError`` and nothing is created."""
    from rules.ledger.store import LedgerStore  # here, not at the top: for start-up time (evaluate never opens it)

    return LedgerStore(ledger_url(settings, override), create=create)


def custody_verifier(settings: Settings) -> Any:
    """Reads custody on-chain (``adapters.custody.CustodyVerifier``) with the settings' nodes."""
    from adapters.custody import CustodyVerifier  # here, for start-up time: web3 loads only to read a chain

    return CustodyVerifier(ethereum=settings.ethereum.given(), bitcoin=settings.bitcoin.given())


def price_reader(settings: Settings, file: Path | None = None) -> Any:
    """Prices from settings ``[prices]``, or only from the static price ``file`` when one is given."""
    from adapters.custody import PriceReader  # here, for start-up time: web3 loads only to read a chain

    if file is not None:
        if not file.is_file():
            raise InputError("no such price file", str(file))
        return PriceReader({**settings.prices.given(), "file": str(file), "feeds": {}})
    return PriceReader(settings.prices.given())
