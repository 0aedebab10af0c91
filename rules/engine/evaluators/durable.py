"""The one module that talks to durable_rules.

durable_rules (2.0.28, last released 2020) is wrong in silence in several ways, each handled here:

* Its ``Host`` starts timer threads that run pending actions later, racing our synchronous calls:
  ``_QuietHost`` starts none, so every action of an ``assert_fact`` runs inside that call.
* The host is process-wide and its set-up races if threads make the first call at once: one host,
  created under a lock; all calls into the engine are serialised by the same lock.
* A ruleset name cannot be registered twice: rulesets are named by bundle hash and registered once.
* An exception inside an action is stored in the state, not raised: actions are guarded, errors
  recorded, and an evaluation with an error - or without the sentinel rule - raises ``EngineError``.
* Asserting the same fact twice raises: every evaluation has its own session id and query id, and
  its state is deleted afterwards (memory stays flat).
* Numbers are binary floats and ``"abc" > 1000`` matches: facts are type-checked before they get
  here (``rules.policy.facts``: bool, str or int below 2**53) - ``check_fact_types`` enforces it again.
* Events are consumed by the first rule they match: we assert *facts*, which every rule sees.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Mapping

from durable import engine as _engine

from rules.engine.compiler import QID, CompiledBundle
from rules.errors import EngineError
from rules.policy.facts import DAY_KEY, FACTS, MAX_INT_FACT


class _QuietHost(_engine.Host):
    """A host without the background dispatch threads."""

    def _run(self) -> None:  # noqa: D401 - overriding durable's timer start-up
        return None


_LOCK = threading.RLock()
_HOST: _QuietHost | None = None
_REGISTERED: set[str] = set()
_FIRED: dict[str, list[str]] = {}
_ERRORS: dict[str, str] = {}
_SEQ = itertools.count(1)

_KEY_TYPES = {spec.key: spec.type for spec in FACTS.values()}
_KEY_TYPES[DAY_KEY] = "int"
_KEY_TYPES[QID] = "int"


def _host() -> _QuietHost:
    global _HOST
    with _LOCK:
        if _HOST is None:
            _HOST = _QuietHost()
        return _HOST


def _make_action(rule_name: str) -> Callable[[Any], None]:
    def action(c: Any) -> None:
        sid = None
        try:
            sid = c.m["sid"]
            _FIRED[sid].append(rule_name)
        except BaseException as e:  # recorded, then raised by evaluate(): never lost in durable's state
            _ERRORS[str(sid)] = f"{rule_name}: {type(e).__name__}: {e}"
    return action


def check_fact_types(facts: Mapping[str, Any]) -> None:
    """Refuse anything durable_rules could compare wrongly."""
    for key, value in facts.items():
        want = _KEY_TYPES.get(key)
        if want is None:
            raise EngineError(f"internal error: unknown fact key {key!r}")
        ok = (isinstance(value, bool) if want == "bool" else
              isinstance(value, str) if want == "str" else
              isinstance(value, int) and not isinstance(value, bool) and -MAX_INT_FACT <= value <= MAX_INT_FACT)
        if not ok:
            raise EngineError(f"internal error: fact {key!r} must be {want}, got {value!r}")


def ensure_registered(compiled: CompiledBundle) -> list[str]:
    """Register the bundle's ruleset shards once per process; return their names."""
    names = []
    with _LOCK:
        host = _host()
        for name, definition in compiled.durable_shards():
            if name not in _REGISTERED:
                for rule_name, rule in definition.items():
                    rule["run"] = _make_action(rule_name)
                host.register_rulesets({name: definition})
                _REGISTERED.add(name)
            names.append(name)
    return names


class DurableEvaluator:
    """Evaluates the compiled rules of one bundle through durable_rules."""

    name = "durable_rules"

    def __init__(self, compiled: CompiledBundle):
        self.compiled = compiled
        self.rulesets = ensure_registered(compiled)

    def fired(self, facts: Mapping[str, Any]) -> set[str]:
        """Names of the durable rules that fired for ``facts`` (over every shard)."""
        check_fact_types(facts)
        fired: set[str] = set()
        with _LOCK:
            host = _host()
            for ruleset in self.rulesets:
                n = next(_SEQ)
                sid = f"e{n}"
                _FIRED[sid] = []
                try:
                    state = host.assert_fact(ruleset, dict(facts, sid=sid, **{QID: n}))
                    if isinstance(state, dict) and "exception" in state:
                        raise EngineError(f"durable_rules action failed: {state['exception']}")
                    if sid in _ERRORS:
                        raise EngineError(f"durable_rules action failed: {_ERRORS.pop(sid)}")
                    shard = _FIRED[sid]
                except _engine.MessageNotHandledException:
                    raise EngineError("durable_rules did not handle the evaluation fact") from None
                finally:
                    _FIRED.pop(sid, None)
                    try:
                        host.delete_state(ruleset, sid)
                    except Exception:  # the state may not exist if the assert itself failed
                        pass
                if "seen" not in shard:
                    raise EngineError(f"durable_rules evaluation did not run in {ruleset} (sentinel rule not fired)")
                fired.update(shard)
        return fired

    def outcomes(self, facts: Mapping[str, Any]) -> dict[int, str]:
        fired = self.fired(facts)
        out = {}
        for r in self.compiled.rules:
            passed, na = r.pass_name in fired, r.na_name in fired
            if passed and na:
                raise EngineError(f"rule {r.id} both applied and did not apply")
            out[r.index] = "pass" if passed else "not_applicable" if na else "fail"
        return out
