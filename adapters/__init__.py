"""Adapters to the outside world (chains, prices, storage). They gather evidence; they never decide eligibility."""
