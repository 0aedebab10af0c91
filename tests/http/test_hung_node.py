"""A node that never answers stalls its credits, never eligibility (issue 17, point 1), through a real `dacp serve`
(tests/support/hung_node.py: a 127.0.0.1 TCP server that accepts and never answers, bounded).

Credits to it end in a timeout (502 custody_unverified, reason ``timeout``, retryable) after the configured
``[ethereum]`` bounds; meanwhile eligibility requests keep their latency, because a credit's chain I/O runs on
the chain's own pool and only its commit on the decision worker. Before the fix an eligibility request
waited for the hung credits (their chain I/O held the single decision worker): 17 s, then 3 s."""

from __future__ import annotations

import statistics

import pytest

from tests.support.hung_node import run

TIMEOUT_S = 3.0


@pytest.mark.slow
@pytest.mark.integration
def test_a_hung_node_stalls_credits_but_not_eligibility(tmp_path):
    out = run(tmp_path, credits=4, workers=2, timeout_s=TIMEOUT_S)
    assert len(out.credits) == 4
    for status, body, took in out.credits:
        assert status == 502 and body["error"]["code"] == "custody_unverified", body
        assert body["error"]["retryable"] is True and body["error"]["reason"] == "timeout", body
        assert body["error"]["result"]["refusal"]["reason"] == "timeout" and "in time" in body["error"]["message"]
        assert took >= TIMEOUT_S * 0.9, took
    assert max(c[2] for c in out.credits) >= 2 * TIMEOUT_S * 0.9  # the pool is bounded: two waited a round
    assert len(out.during) >= 20, out.during  # eligibility answered all along
    # eligibility keeps its own latency: no request waited for the node (a credit holding the worker: 3 s)
    normal, during = statistics.median(out.normal), statistics.median(out.during)
    assert max(out.during) < 1.0 and during < 3 * normal + 0.02, (normal, during, max(out.during))
