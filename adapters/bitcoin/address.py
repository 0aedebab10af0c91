"""Bitcoin address validation per network, pure Python, no network access.

Two encodings exist:

* base58check (legacy P2PKH ``1..``/``m..``/``n..`` and P2SH ``3..``/``2..``): one version byte,
  a 20-byte hash, and a 4-byte double-SHA256 checksum;
* segwit (BIP-173 bech32 for witness v0, BIP-350 bech32m for witness v1..16): a human-readable
  part (``bc``, ``tb``, ``bcrt``...) that names the network, ``1``, then 5-bit data with a checksum.

A syntactically valid address of *another* network is refused with reason ``wrong_network`` and a
message naming the network expected, so that a testnet deposit address pasted into a mainnet
configuration is caught before any node is asked.

``NETWORKS`` are Bitcoin's. ``TEST_NETWORKS`` are stand-ins that exist only because the integration
tests use ``litecoind -regtest`` in place of ``bitcoind`` (``litecoin-regtest``; its prefixes were read
from the node itself: ``getnewaddress`` of each type, ``validateaddress``). A reader is configured for a
test network only on explicit opt-in (``network_params(..., allow_test_networks=True)``; settings
``[bitcoin] allow_test_networks = true``). Decoding knows both tables (``KNOWN_NETWORKS``), so that a
Litecoin address given for Bitcoin is named for what it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from rules.errors import EvidenceError, InputError

__all__ = [
    "KNOWN_NETWORKS",
    "NETWORKS",
    "TEST_NETWORKS",
    "DecodedAddress",
    "NetworkParams",
    "decode_address",
    "encode_base58check",
    "encode_segwit",
    "network_params",
    "networks_of",
    "validate_address",
]


@dataclass(frozen=True)
class NetworkParams:
    """Address prefixes of one network and the ``chain`` name its node reports."""

    name: str
    chain: str  # getblockchaininfo "chain" of a node on this network
    p2pkh: tuple[int, ...]  # accepted base58 version bytes for pay-to-pubkey-hash
    p2sh: tuple[int, ...]  # accepted base58 version bytes for pay-to-script-hash
    hrp: str  # bech32 human-readable part
    description: str


NETWORKS: dict[str, NetworkParams] = {
    p.name: p
    for p in (
        NetworkParams("main", "main", (0x00,), (0x05,), "bc", "Bitcoin mainnet"),
        NetworkParams("test", "test", (0x6F,), (0xC4,), "tb", "Bitcoin testnet3"),
        NetworkParams("testnet4", "testnet4", (0x6F,), (0xC4,), "tb", "Bitcoin testnet4"),
        NetworkParams("signet", "signet", (0x6F,), (0xC4,), "tb", "Bitcoin signet"),
        NetworkParams("regtest", "regtest", (0x6F,), (0xC4,), "bcrt", "Bitcoin regtest"),
    )
}

# Stand-ins for tests, never for custody unless explicitly enabled (see the module note).
TEST_NETWORKS: dict[str, NetworkParams] = {
    p.name: p
    for p in (
        # litecoind 0.21 -regtest: P2PKH m/n (111), P2SH Q (58) and, still accepted, 2 (196);
        # bech32 hrp "rltc". Its node reports chain "regtest".
        NetworkParams(
            "litecoin-regtest", "regtest", (0x6F,), (0x3A, 0xC4), "rltc", "Litecoin regtest (test stand-in)"
        ),
    )
}

KNOWN_NETWORKS: dict[str, NetworkParams] = {**NETWORKS, **TEST_NETWORKS}


def network_params(network: str, *, allow_test_networks: bool = False, where: str = "network") -> NetworkParams:
    """The network a reader is configured for: one of ``NETWORKS``, or of ``TEST_NETWORKS`` when allowed."""
    if network in NETWORKS:
        return NETWORKS[network]
    if network in TEST_NETWORKS:
        if allow_test_networks:
            return TEST_NETWORKS[network]
        raise InputError(
            f"{network!r} is a test stand-in network ({TEST_NETWORKS[network].description}), not a Bitcoin "
            "network; it is used only when allowed explicitly ([bitcoin] allow_test_networks = true)",
            where,
        )
    raise InputError(f"unknown Bitcoin network {network!r}; expected one of {', '.join(NETWORKS)}", where)


@dataclass(frozen=True)
class DecodedAddress:
    """A validated address: its canonical text form and what it pays to.

    ``kind`` is one of ``p2pkh``, ``p2sh``, ``p2wpkh``, ``p2wsh``, ``p2tr``, ``witness_unknown``.
    ``program`` is the 20-byte hash (base58) or the witness program (segwit).
    """

    address: str  # canonical form, one per output script (bech32 lower-cased, base58 in the network's first version)
    network: str
    kind: str
    program: bytes
    witness_version: int | None = None

    @property
    def script_pubkey(self) -> bytes:
        """The output script this address pays to (what ``scantxoutset`` reports as ``scriptPubKey``)."""
        if self.kind == "p2pkh":
            return b"\x76\xa9\x14" + self.program + b"\x88\xac"  # DUP HASH160 <20> EQUALVERIFY CHECKSIG
        if self.kind == "p2sh":
            return b"\xa9\x14" + self.program + b"\x87"  # HASH160 <20> EQUAL
        assert self.witness_version is not None
        op = 0 if self.witness_version == 0 else 0x50 + self.witness_version  # OP_0 / OP_1..OP_16
        return bytes([op, len(self.program)]) + self.program


# --------------------------------------------------------------------------- base58check

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _b58decode_check(s: str) -> bytes | None:
    """Payload (version byte + body) of a base58check string, or None if malformed."""
    if not s or len(s) > 64:  # a 25-byte payload is 34-35 chars; refuse absurd lengths early
        return None
    n = 0
    for c in s:
        v = _B58_INDEX.get(c)
        if v is None:
            return None
        n = n * 58 + v
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    raw = b"\x00" * (len(s) - len(s.lstrip("1"))) + body
    if len(raw) < 5:
        return None
    payload, check = raw[:-4], raw[-4:]
    if _sha256d(payload)[:4] != check:
        return None
    return payload


def encode_base58check(version: int, payload: bytes) -> str:
    """Encode ``version`` byte + ``payload`` as base58check (an address's canonical spelling; tests' vectors)."""
    raw = bytes([version]) + payload
    raw += _sha256d(raw)[:4]
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + out


# --------------------------------------------------------------------------- bech32 / bech32m

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(_CHARSET)}
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


def _polymod(values: Iterable[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (b >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _bech32_decode(s: str) -> tuple[str, list[int], int] | None:
    """(hrp, data without checksum, checksum constant) of a bech32/bech32m string, or None."""
    if any(ord(c) < 33 or ord(c) > 126 for c in s):
        return None
    if s.lower() != s and s.upper() != s:  # mixed case is forbidden
        return None
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s) or len(s) > 90:
        return None
    hrp, data_part = s[:pos], s[pos + 1 :]
    data = []
    for c in data_part:
        v = _CHARSET_INDEX.get(c)
        if v is None:
            return None
        data.append(v)
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        return None
    return hrp, data[:-6], const


def _convertbits(data: Iterable[int], frombits: int, tobits: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for v in data:
        if v < 0 or v >> frombits:
            return None
        acc = (acc << frombits) | v
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        return None  # more than 4 bits of padding, or non-zero padding
    return out


def _segwit_decode(s: str) -> tuple[str, int, bytes] | None:
    """(hrp, witness version, program) if ``s`` is a valid BIP-173/BIP-350 segwit address."""
    dec = _bech32_decode(s)
    if dec is None:
        return None
    hrp, data, const = dec
    if not data or data[0] > 16:
        return None
    version = data[0]
    # BIP-350: v0 must use bech32, v1+ must use bech32m.
    if (version == 0) != (const == _BECH32_CONST):
        return None
    prog = _convertbits(data[1:], 5, 8, False)
    if prog is None or not 2 <= len(prog) <= 40:
        return None
    if version == 0 and len(prog) not in (20, 32):
        return None
    return hrp, version, bytes(prog)


def encode_segwit(hrp: str, witness_version: int, program: bytes) -> str:
    """Encode a segwit address (bech32 for v0, bech32m for v1+). Used by tests to build vectors."""
    const = _BECH32_CONST if witness_version == 0 else _BECH32M_CONST
    bits = _convertbits(program, 8, 5, True)
    assert bits is not None
    data = [witness_version] + bits
    pm = _polymod(_hrp_expand(hrp) + data + [0] * 6) ^ const
    checksum = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


# --------------------------------------------------------------------------- per network


def _params(network: str) -> NetworkParams:
    try:
        return KNOWN_NETWORKS[network]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown Bitcoin network {network!r}; expected one of {', '.join(KNOWN_NETWORKS)}", "network"
        ) from None


def _decode_for(address: str, p: NetworkParams) -> DecodedAddress | None:
    seg = _segwit_decode(address)
    if seg is not None:
        hrp, version, prog = seg
        if hrp != p.hrp:
            return None
        if version == 0:
            kind = "p2wpkh" if len(prog) == 20 else "p2wsh"
        elif version == 1 and len(prog) == 32:
            kind = "p2tr"
        else:
            kind = "witness_unknown"
        return DecodedAddress(address.lower(), p.name, kind, prog, version)
    payload = _b58decode_check(address)
    if payload is None or len(payload) != 21:
        return None
    version_byte, body = payload[0], payload[1:]
    # One script, one text: a network that accepts two version bytes for one kind (Litecoin's P2SH ``Q..`` and
    # ``2..``) spells both with its first, so custody keyed by the address is keyed by the output script.
    if version_byte in p.p2pkh:
        return DecodedAddress(encode_base58check(p.p2pkh[0], body), p.name, "p2pkh", body)
    if version_byte in p.p2sh:
        return DecodedAddress(encode_base58check(p.p2sh[0], body), p.name, "p2sh", body)
    return None


def decode_address(address: str, network: str) -> DecodedAddress | None:
    """The decoded address if it is valid on ``network``, else None. Raises InputError for an unknown network."""
    p = _params(network)
    if not isinstance(address, str):
        return None
    return _decode_for(address, p)


def networks_of(address: str) -> list[str]:
    """Every known network on which ``address`` is valid (several share prefixes: test/signet/regtest m..)."""
    if not isinstance(address, str):
        return []
    return [name for name, p in KNOWN_NETWORKS.items() if _decode_for(address, p) is not None]


def validate_address(address: str, network: str) -> DecodedAddress:
    """Decode ``address`` for ``network`` or raise ``EvidenceError``.

    Reasons: ``wrong_network`` when the address is valid on another known network (the message
    names the expected one and the one(s) it belongs to), ``invalid_address`` otherwise.
    """
    p = _params(network)
    if not isinstance(address, str):
        raise EvidenceError("invalid_address", f"address must be a string, got {type(address).__name__}")
    dec = _decode_for(address, p)
    if dec is not None:
        return dec
    shown = address if len(address) <= 100 else address[:100] + "..."
    others = networks_of(address)
    if others:
        names = ", ".join(f"{KNOWN_NETWORKS[o].description} ({o})" for o in others)
        raise EvidenceError(
            "wrong_network",
            f"address {shown!r} belongs to {names}, not to {p.description} ({p.name}) as configured",
        )
    raise EvidenceError(
        "invalid_address",
        f"{shown!r} is not a valid {p.description} ({p.name}) address "
        f"(bad checksum, unknown prefix or malformed encoding)",
    )
