"""Decision ids: UUID version 7 (RFC 9562) - random, and ordered by time within a process.

Ordered ids keep the decision log's unique index on ``entry_id`` growing at its right edge, so an
append touches a few index pages instead of one random page per entry (the log of a book's
revaluation is written in large batches), and they sort by when the decision was made.

Layout: 48 bits of Unix milliseconds, version 7, a 12-bit counter (method 1 of RFC 9562 section 6.2:
reseeded at random below 2**11 each new millisecond, incremented within one; when it runs out, the
timestamp is advanced by one millisecond), the variant, 62 random bits from the OS.
"""

from __future__ import annotations

import os
import threading
import time

_LOCK = threading.Lock()
_state = [0, 0]  # last millisecond, counter
_RANDOM: list[int] = []


def _random62() -> int:
    try:
        return _RANDOM.pop()
    except IndexError:
        block = os.urandom(8 * 1024)
        _RANDOM.extend(int.from_bytes(block[i:i + 8], "big") >> 2 for i in range(0, len(block), 8))
        return _RANDOM.pop()


def new_id() -> str:
    """A new UUIDv7 in its canonical text form, e.g. ``019ad9b4-6c3e-7a1f-9c2d-3b8e41f07a55``."""
    return new_ids(1)[0]


def new_ids(n: int) -> list[str]:
    """``n`` new ids at once, in order (one lock, and one read of the clock and of the OS's random
    source, for the lot)."""
    if n <= 0:
        return []
    now = time.time_ns() // 1_000_000
    stamps = []
    with _LOCK:
        last, counter = _state
        for _ in range(n):
            if now > last:
                last, counter = now, _random62() & 0x7FF
            else:  # the same millisecond (or the clock stepped back): keep order
                counter += 1
                if counter > 0xFFF:
                    last, counter = last + 1, _random62() & 0x7FF
            stamps.append((last, counter))
        _state[0], _state[1] = last, counter
    rand = os.urandom(8 * n).hex()
    out = []
    text_of: dict[int, str] = {}
    for i, (ms, c) in enumerate(stamps):
        t = text_of.get(ms)
        if t is None:
            t = text_of[ms] = f"{ms:012x}"
        r = rand[16 * i:16 * i + 16]  # 64 random bits: the variant's two replace the top two
        out.append(f"{t[:8]}-{t[8:]}-7{c:03x}-{'89ab'[int(r[0], 16) & 3]}{r[1:4]}-{r[4:]}")
    return out
