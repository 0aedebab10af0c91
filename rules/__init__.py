"""dacp rules engine: policy language, compiler onto durable_rules, decisions, decision log."""

__version__ = "0.1.0"
