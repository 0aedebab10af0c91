"""The running service: the bundle in force, hot reload, and the calls the routes make into ``rules.app``.

* Policy reload without downtime: the new bundle is loaded, validated and compiled beside the running one
  (through ``Dacp``, so any approval check there applies) and swapped in with one reference assignment
  under a lock; requests in flight finish on the ``Active`` snapshot they started with; a bundle that
  fails leaves the old one serving.
* durable_rules is process-wide and not thread-safe: ``decide``, ``credit`` and ``withdraw`` run on ONE
  worker thread (``engine_limiter``, an anyio capacity limiter of 1), never on the event loop. Auditors'
  reads (``read``) use a second ``Dacp`` (its own SQLite connection) on the default thread pool.
* Chain I/O never runs on that worker: a credit reads its price and custody (``rules.ledger.credit.gather``)
  on its chain's own bounded pool (``chain_limiter``: ``[service] ethereum_workers``, ``bitcoin_workers``),
  each node request under the adapters' deadlines, and only then commits on the decision worker (whose one
  chain request, the read again with the locks held, has its own short deadline: ``recheck_timeout_s``). A
  node that hangs stalls its credits (a timeout, 502), never eligibility.
* Group commit (``decide_one``): single queries that arrive together are decided on that thread as one
  group and logged in ONE transaction (one ``DecisionLog.append``, one chunk, one fsync), in the order they
  arrived; each request is answered only once the group's transaction has committed. A group is whatever
  gathered while the worker was busy, plus at most ``group_wait_s`` of waiting when it was idle, at most
  ``group_max`` queries. A log that cannot be written fails every request of its group (503, nothing of it
  written); an engine failure (a ``DacpError`` raised while deciding, before the append) is isolated: that
  group is decided again query by query, so each request gets its own answer; a bug fails its group (500).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import anyio

from rules.app import Dacp, audit_signer, custody_verifier, open_ledger_store, price_reader
from rules.engine.decide import Decision
from rules.engine.query import Query
from rules.errors import DacpError, InputError, StorageError
from rules.http.config import ServiceConfig
from rules.http.errors import HttpError
from rules.http.logs import event
from rules.http.metrics import Metrics
from rules.ledger.book import Ledger
from rules.ledger.credit import Gathered, commit, gather
from rules.ledger.requests import CreditRequest, WithdrawRequest, check_key
from rules.settings import Settings
from rules.values import now_utc, utc_text


@dataclass(frozen=True)
class Active:
    """The bundle in force and the Dacp that decides with it (replaced whole on reload, never mutated)."""

    dacp: Dacp
    loaded_at: str

    @property
    def hash(self) -> str:
        return self.dacp.bundle.hash


GROUP_MAX = 256  # single queries decided and logged in one transaction, at most
GROUP_WAIT_S = 0.001  # how long an idle worker waits for a group to fill (a busy one gathers while it works)


class _Group:
    """The single queries waiting for the decision worker, on one event loop, and whether a drain runs."""

    def __init__(self) -> None:
        self.pending: list[tuple[Active, Query, asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.full = asyncio.Event()


@dataclass
class Service:
    settings: Settings
    config: ServiceConfig
    make_verifier: Callable[[Settings], Any] | None = None  # None: rules.app.custody_verifier
    make_prices: Callable[[Settings], Any] | None = None  # None: rules.app.price_reader
    metrics: Metrics = field(default_factory=Metrics)
    group_max: int = GROUP_MAX
    group_wait_s: float = GROUP_WAIT_S

    def __post_init__(self) -> None:
        self._swap = threading.Lock()
        self.active = self._load()  # fails (PolicyError) if the configured bundle is invalid: fail closed
        self._show(self.active, None)
        self._reader = Dacp(self.settings, log_enabled=False)  # its own SQLite connection for auditors' reads
        self._read_lock = threading.Lock()
        self.engine_limiter = anyio.CapacityLimiter(1)  # durable_rules: one decision thread
        svc = self.settings.service
        self.chain_limiters = {"ethereum": anyio.CapacityLimiter(svc.ethereum_workers),
                               "bitcoin": anyio.CapacityLimiter(svc.bitcoin_workers)}
        self._ledger_lock = threading.Lock()
        self._parts_lock = threading.Lock()
        self._ledger_store: Any = None  # adapters.storage.ledger_store.LedgerStore, opened on first credit/withdrawal
        self._ledger_parts: tuple[Any, Any] | None = None  # (verifier, prices)
        self._ledger_cache: tuple[Active, Ledger] | None = None  # the ledger on the latest snapshot used
        self._margin_cache: tuple[Active, Any] | None = None  # rules.margin.book.MarginBook, likewise
        self._last_checkpoint: tuple[int, float] = (0, time.monotonic())  # (tree size, when) of the last one signed
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Group] = weakref.WeakKeyDictionary()
        self.group_sizes: list[int] = []  # the size of each group committed (the last 10,000; tests and the bench)

    def _verifier(self) -> Any:
        return (self.make_verifier or custody_verifier)(self.settings)

    def _prices(self) -> Any:
        return (self.make_prices or price_reader)(self.settings)

    def _load(self) -> Active:
        verifier = prices = None
        if self.config.verify:
            verifier, prices = self._verifier(), self._prices()
        dacp = Dacp(self.settings, verifier=verifier, prices=prices)
        _ = dacp.engine  # load, validate and compile now, beside the running bundle (through Dacp: its checks apply)
        return Active(dacp, utc_text(now_utc(), "seconds"))

    def _show(self, new: Active, old: Active | None) -> None:
        if old is not None:
            b = old.dacp.bundle
            self.metrics.bundle.remove(b.hash, b.name, b.version)
        b = new.dacp.bundle
        self.metrics.bundle.labels(b.hash, b.name, b.version).set(1)

    def reload(self, expect: str | None, who: str) -> tuple[Active, Active]:
        """Load, validate and compile the configured bundle beside the running one; swap atomically."""
        old = self.active
        try:
            new = self._load()
            if expect is not None and new.hash != expect:
                raise HttpError(409, "bundle_mismatch", f"the policies directory holds bundle {new.hash}, not the "
                                f"expected {expect}; nothing was changed", policy_bundle=old.hash)
        except (DacpError, HttpError) as e:
            self.metrics.reloads.labels("failed").inc()
            event(logging.ERROR, "policy reload failed; the running bundle keeps serving", event="policy_reload",
                  outcome="failed", by=who, serving=old.hash, error=str(e))
            raise
        with self._swap:
            old, self.active = self.active, new  # the one reference swap
            self._show(new, old)
        self.metrics.reloads.labels("ok").inc()
        event(logging.INFO, "policy bundle reloaded", event="policy_reload", outcome="ok", by=who,
              previous=old.hash, bundle=new.hash, name=new.dacp.bundle.name, version=new.dacp.bundle.version)
        return old, new

    async def gather(self, active: Active, queries: list[Query]) -> list[Any] | None:
        """With ``[service] verify``, each query's chain reads, on its chain's pool (never the engine thread);
        None without."""
        if not self.config.verify:
            return None
        return [await anyio.to_thread.run_sync(active.dacp.gather, q, limiter=self.chain_limiter(active, q.asset))
                for q in queries]

    def decide(self, active: Active, queries: list[Query], gathered: list[Any] | None = None) -> list[Decision]:
        """Decide and log under ``active`` (the snapshot the request started with), on what ``gathered`` read of
        the chains (None: read them here, if ``[service] verify``). Runs on the engine thread."""
        t0 = time.perf_counter()
        decisions = active.dacp.evaluate(queries, verify=self.config.verify and gathered is None, gathered=gathered)
        self.metrics.decision_latency.observe(time.perf_counter() - t0)
        for d in decisions:
            self.metrics.decisions.labels("eligible" if d.eligible else "ineligible").inc()
            v = d.head.get("verification") or {}
            if v.get("status") == "failed":
                self.metrics.custody_failures.labels(str(v.get("reason", "unknown"))).inc()
        return decisions

    # -- group commit of single queries ------------------------------------------------------------
    async def decide_one(self, active: Active, query: Query) -> Decision:
        """Decide and log one query under ``active``, grouped with the others waiting (see the module notes);
        returns once its log entry is committed, or raises what its group (or it alone) raised."""
        gathered = await self.gather(active, [query])  # [service] verify: the chains first, off the worker
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:
            group = self._groups[loop] = _Group()
        future: asyncio.Future = loop.create_future()
        group.pending.append((active, query, gathered[0] if gathered else None, future))
        if len(group.pending) >= self.group_max:
            group.full.set()
        if group.task is None:
            group.task = loop.create_task(self._drain(group))
        return await future

    async def _drain(self, group: _Group) -> None:
        """Take groups off ``pending`` and decide them on the engine worker until none is left."""
        taken: list[tuple[Active, Query, Any, asyncio.Future]] = []
        try:
            while group.pending:
                if len(group.pending) < self.group_max and self.group_wait_s > 0:
                    group.full.clear()
                    try:
                        await asyncio.wait_for(group.full.wait(), self.group_wait_s)
                    except asyncio.TimeoutError:
                        pass
                taken, group.pending[:self.group_max] = group.pending[:self.group_max], []
                outcomes = await anyio.to_thread.run_sync(self.decide_group, [(a, q) for a, q, _, _ in taken],
                                                          [g for _, _, g, _ in taken], limiter=self.engine_limiter)
                for (_, _, _, future), outcome in zip(taken, outcomes):
                    if future.done():  # the client went away: its entry is logged all the same
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                taken = []
        except BaseException as e:  # a bug here, or the loop is shutting down: no request is left waiting
            for _, _, _, future in taken + group.pending:
                if not future.done():
                    future.set_exception(e if isinstance(e, Exception) else RuntimeError("the service is stopping"))
            group.pending.clear()
            raise
        finally:
            group.task = None

    def decide_group(self, items: list[tuple[Active, Query]],
                     gathered: list[Any] | None = None) -> list[Decision | BaseException]:
        """Decide and log ``items`` (in order), one transaction per run of the same snapshot; a decision or
        an exception for each; ``gathered``: each item's chain reads (``gather``) or None. Runs on the engine
        thread."""
        read = gathered if gathered is not None and all(g is not None for g in gathered) else None
        self.group_sizes.append(len(items))
        if len(self.group_sizes) > 10_000:
            del self.group_sizes[:5_000]
        outcomes: list[Decision | BaseException] = []
        start = 0
        while start < len(items):
            active = items[start][0]
            end = start
            while end < len(items) and items[end][0] is active:
                end += 1
            queries = [q for _, q in items[start:end]]
            part = read[start:end] if read is not None else None
            try:
                outcomes.extend(self.decide(active, queries, part))
            except StorageError as e:  # the group's transaction did not commit: nothing of it is logged
                outcomes.extend([e] * len(queries))
            except DacpError as e:  # the engine refused (before the append): decide each again alone
                if len(queries) == 1:
                    outcomes.append(e)
                else:
                    for i, q in enumerate(queries):
                        try:
                            outcomes.extend(self.decide(active, [q], [part[i]] if part is not None else None))
                        except Exception as one:  # noqa: BLE001 - that request's own answer
                            outcomes.append(one)
            except Exception as e:  # noqa: BLE001 - a bug: where it struck is unknown, so no retry; a 500 each
                outcomes.extend([e] * len(queries))
            start = end
        return outcomes

    def read(self, fn: Callable[[Dacp], Any]) -> Any:
        """``fn`` on the auditors' ``Dacp`` (one at a time: it holds one SQLite connection)."""
        with self._read_lock:
            return fn(self._reader)

    # -- the collateral ledger (credits, withdrawals): runs on the engine thread, like decide ----------
    def _ledger(self, active: Active) -> Ledger:
        """The ledger under ``active`` (the request's snapshot), on the one ledger store of this service.

        The store is opened once, on first use (settings ``[ledger] url`` / DACP_LEDGER_URL, else the
        decision log, as the CLI does), and closed on shutdown. The verifier and prices are always
        wired (crediting needs them, whatever ``[service] verify`` says for eligibility)."""
        with self._ledger_lock:
            store = self._store_locked()
            cached = self._ledger_cache
            if cached is None or cached[0] is not active:  # a reload: a ledger on the new bundle
                verifier, prices = self._parts()
                cached = self._ledger_cache = (active, Ledger.from_dacp(active.dacp, store, verifier=verifier,
                                                                        prices=prices))
            ledger = cached[1]
        return self._priced(ledger)

    @staticmethod
    def _priced(ledger: Ledger) -> Ledger:
        if not getattr(ledger.prices, "configured", True):
            raise HttpError(503, "not_configured", "credits need a price source (settings [prices] file or feeds); "
                            "none is configured; nothing was credited")
        return ledger

    def margin(self, active: Active) -> Any:
        """Margin coverage (``rules.margin.book.MarginBook``) under ``active``'s bundle, on this service's one
        ledger store (opened on first use, as for credits); engine thread."""
        from rules.margin.book import MarginBook  # here: a service that never asks about margin never loads it

        with self._ledger_lock:
            store, cached = self._store_locked(), self._margin_cache
            if cached is None or cached[0] is not active:
                cached = self._margin_cache = (active, MarginBook(active.dacp.bundle, store))
            return cached[1]

    def chain_limiter(self, active: Active, asset: str) -> anyio.CapacityLimiter:
        """The bounded pool of ``asset``'s chain (an unknown asset: Ethereum's; its gather refuses it at once)."""
        known = active.dacp.bundle.assets.get(asset)
        return self.chain_limiters.get(known.chain if known else "ethereum", self.chain_limiters["ethereum"])

    async def credit_async(self, active: Active, req: CreditRequest) -> dict[str, Any]:
        """Credit under ``active``: the chain I/O on the chain's pool, then the commit on the engine thread."""
        check_key(req.idempotency_key)
        ledger = self._cached_ledger(active)
        if ledger is None:
            limiter = self.chain_limiter(active, req.asset)
            await anyio.to_thread.run_sync(self._parts, limiter=limiter)  # imports web3: seconds, off the worker
            # opening the store and the ledger's log touches the database: the engine thread's job
            ledger = await anyio.to_thread.run_sync(self._ledger, active, limiter=self.engine_limiter)
        self._priced(ledger)
        gathered = await anyio.to_thread.run_sync(gather, ledger, req, limiter=self.chain_limiter(active, req.asset))
        return await anyio.to_thread.run_sync(partial(self.credit, active, req, gathered),
                                              limiter=self.engine_limiter)

    def _parts(self) -> tuple[Any, Any]:
        """The ledger's verifier and prices (made once; making them imports the chain adapters)."""
        with self._parts_lock:
            if self._ledger_parts is None:
                self._ledger_parts = (self._verifier(), self._prices())
            return self._ledger_parts

    def _cached_ledger(self, active: Active) -> Ledger | None:
        with self._ledger_lock:
            cached = self._ledger_cache
            return cached[1] if cached is not None and cached[0] is active else None

    def credit(self, active: Active, req: CreditRequest, gathered: Gathered | None = None) -> dict[str, Any]:
        """Credit under ``active`` on what ``gathered`` read (None: read it here). Runs on the engine thread (the
        ledger decides with the engine)."""
        check_key(req.idempotency_key)
        ledger = self._ledger(active)
        t0 = time.perf_counter()
        try:
            result = ledger.credit(req) if gathered is None else commit(ledger, req, gathered)
        except InputError as e:
            self._idempotency_conflict(ledger, e, req, "credit")
            raise
        self.metrics.decision_latency.observe(time.perf_counter() - t0)
        if not result.get("replayed"):
            self.metrics.decisions.labels("eligible" if result.get("eligible") else "ineligible").inc()
            if (result.get("refusal") or {}).get("rule") == "custody.onchain-verification":
                self.metrics.custody_failures.labels("credit").inc()
        return result

    def withdraw(self, active: Active, req: WithdrawRequest) -> dict[str, Any]:
        check_key(req.idempotency_key)
        ledger = self._ledger(active)
        try:
            return ledger.withdraw(req)
        except InputError as e:
            self._idempotency_conflict(ledger, e, req, "withdraw")
            raise

    def _store(self) -> Any:
        with self._ledger_lock:
            return self._store_locked()

    def _store_locked(self) -> Any:
        """The one ledger store, opened on first use (``_ledger_lock`` held)."""
        if self._ledger_store is None:
            self._ledger_store = open_ledger_store(self.settings)
        return self._ledger_store

    @staticmethod
    def _idempotency_conflict(ledger: Ledger, e: InputError, req: CreditRequest | WithdrawRequest,
                              operation: str) -> None:
        """The ledger refuses a used key with another body (InputError): a 409 here, with its message."""
        stored = ledger.store.request(req.idempotency_key)
        if stored is not None and (stored.operation != operation or stored.fingerprint != req.fingerprint()):
            raise HttpError(409, "idempotency_key_reused", e.message, where="Idempotency-Key") from None

    # -- signed checkpoints ([audit] checkpoint_every_s / checkpoint_every_entries) -----------------------
    def checkpoint_due(self, now: float) -> bool:
        """Whether a checkpoint is due: the log grew since the last one, and the interval or the count passed."""
        a = self.settings.audit
        if a.signing_key_file is None or (a.checkpoint_every_s is None and a.checkpoint_every_entries is None):
            return False
        size = self.read(lambda d: d.reading_log.count() if d.log_exists() else 0)
        last_size, last_at = self._last_checkpoint
        if size <= last_size:
            return False
        return bool((a.checkpoint_every_s is not None and now - last_at >= a.checkpoint_every_s)
                    or (a.checkpoint_every_entries is not None and size - last_size >= a.checkpoint_every_entries))

    def checkpoint(self, now: float) -> str:
        """Sign the tree head now (on the auditors' connection); returns the note."""
        signer = audit_signer(self.settings)
        note = self.read(lambda d: d.reading_log.checkpoint(signer))
        self._last_checkpoint = (int(note.split("\n")[1]), now)
        event(logging.INFO, "checkpoint signed", event="checkpoint", size=self._last_checkpoint[0])
        return note

    def close(self) -> None:
        with self._ledger_lock:
            store, self._ledger_store, self._ledger_cache = self._ledger_store, None, None
            self._margin_cache = None
        if store is not None:
            store.close()
