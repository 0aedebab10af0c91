"""Bounded retries, one policy for every adapter that talks to something that may be briefly away
(an Ethereum or Bitcoin node, a busy SQLite file).

A ``RetryPolicy`` says how often and how long: ``retries`` extra attempts after the first (``None``: as
many as the time allows), waits growing from ``backoff_s`` by ``factor`` (2: exponential, 1: constant),
and ``max_total_s`` for the whole operation (the caller starts that clock: ``call``'s ``remaining``).
No retry starts whose wait would reach the deadline, so an operation ends within ``max_total_s`` plus
one attempt (``request_timeout_s``, the bound of a single attempt, is the caller's to apply to its
transport).

Which errors are worth another attempt is the caller's knowledge: ``call`` takes a ``transient``
predicate, and a ``give_up`` that raises the caller's own error (with how many attempts were made and
whether time ran out) when no retry follows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NoReturn, TypeVar

from rules.errors import InputError

__all__ = ["RetryPolicy", "Stop", "call"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for talking to one peer (defaults: an Ethereum JSON-RPC node).

    ``retries`` is the number of *extra* attempts per request after the first. ``max_total_s`` bounds
    the whole operation (a full verification or price read), across all its requests: no retry starts
    once it is spent. A single request can still take up to ``request_timeout_s``, so the worst case is
    about ``max_total_s + request_timeout_s``.
    """

    request_timeout_s: float = 10.0
    retries: int | None = 3
    backoff_s: float = 0.25
    max_total_s: float | None = 30.0  # None: the caller bounds the operation (or the retries alone do)
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.request_timeout_s <= 0 or (self.max_total_s is not None and self.max_total_s <= 0):
            raise InputError("request_timeout_s and max_total_s must be positive", "RetryPolicy")
        if (self.retries is not None and self.retries < 0) or self.backoff_s < 0:
            raise InputError("retries and backoff_s must not be negative", "RetryPolicy")
        if self.factor < 1:
            raise InputError("factor must be at least 1 (waits never shrink)", "RetryPolicy")

    def wait(self, failures: int) -> float:
        """The wait after ``failures`` failed attempts in a row (1: ``backoff_s``)."""
        return self.backoff_s * (self.factor ** (failures - 1))

    def next_wait(self, failures: int, remaining_s: float | None) -> float | None:
        """The wait before the next attempt, or None to give up: the retries are spent, or the wait would
        reach the deadline (``remaining_s`` left of the operation; None: no deadline)."""
        wait = self.wait(failures)
        if self.retries is not None and failures > self.retries:
            return None
        if remaining_s is not None and remaining_s <= wait:
            return None
        return wait


@dataclass(frozen=True)
class Stop:
    """Why ``call`` stops retrying: after ``attempts`` attempts; ``retryable`` False if the error is not
    transient; ``out_of_time`` if the next wait would have passed the deadline."""

    attempts: int
    retryable: bool
    out_of_time: bool


def call(attempt: Callable[[], T], policy: RetryPolicy, *, transient: Callable[[Exception], bool],
         give_up: Callable[[Exception, Stop], NoReturn], remaining: Callable[[], float] | None = None,
         errors: tuple[type[Exception], ...] = (Exception,), sleep: Callable[[float], None] | None = None,
         on_retry: Callable[[], None] | None = None) -> T:
    """``attempt()`` until it answers, an error in ``errors`` is not ``transient``, the retries are spent or
    the time is (``remaining()``: seconds left of the operation). Then ``give_up(error, stop)`` raises.

    ``transient`` may itself re-raise an error that is no failure at all (an answer the caller judges,
    or a programming error), which then passes through untouched. ``sleep`` defaults to ``time.sleep``
    (looked up at the call, so a test can replace it)."""
    failures = 0
    while True:
        try:
            return attempt()
        except errors as exc:
            failures += 1
            retryable = transient(exc)
            left = remaining() if remaining is not None else None
            wait = policy.next_wait(failures, left) if retryable else None
            if wait is None:
                out_of_time = left is not None and left <= policy.wait(failures)
                give_up(exc, Stop(failures, retryable, out_of_time))
                raise AssertionError("give_up must raise") from exc  # pragma: no cover
            if on_retry is not None:
                on_retry()
            (sleep or time.sleep)(wait)
