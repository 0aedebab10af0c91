"""The service's Prometheus metrics (served at /metrics), in a registry of their own per service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_REQUEST_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
_DECISION_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dacp_http_requests", "HTTP requests by operation and status",
                                ["operation", "status"], registry=r)
        self.request_latency = Histogram("dacp_http_request_seconds", "HTTP request latency", ["operation"],
                                         registry=r, buckets=_REQUEST_BUCKETS)
        self.decisions = Counter("dacp_decisions", "Decisions made, by outcome", ["outcome"], registry=r)
        self.decision_latency = Histogram("dacp_decision_seconds", "Time to decide and log one request's queries",
                                          registry=r, buckets=_DECISION_BUCKETS)
        self.custody_failures = Counter("dacp_custody_verification_failures",
                                        "On-chain custody verifications that failed", ["reason"], registry=r)
        self.audit_failures = Counter("dacp_audit_verification_failures",
                                      "Audit chain verifications that found tampering", registry=r)
        self.reloads = Counter("dacp_policy_reloads", "Policy reloads by outcome", ["outcome"], registry=r)
        self.bundle = Gauge("dacp_policy_bundle_info", "The policy bundle in force (1)", ["bundle", "name", "version"],
                            registry=r)
