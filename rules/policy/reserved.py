"""The engine's own rules: every decision's trace carries them beside the bundle's rules, so their ids
are reserved (the loader refuses a bundle that uses one). Each is ``(id, description)``."""

from __future__ import annotations

IN_FORCE = ("bundle.in-force", "The policy bundle must be in force on the query date.")
REGISTERED = ("registry.asset-registered", "The asset must be in the asset registry.")
SCHEDULE = ("haircut.schedule", "A haircut schedule must apply to the asset on the query date.")
VERIFIED = ("custody.onchain-verification",
            "The custody balance must be verified on-chain when verification is asked for.")
ENGINE_RULES: dict[str, str] = {r[0]: r[1] for r in (IN_FORCE, REGISTERED, SCHEDULE, VERIFIED)}
