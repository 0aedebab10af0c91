"""Ethereum address validation (EIP-55)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.ethereum.address import checksum_address, checksum_addresses
from rules.errors import EvidenceError, InputError

# Test vectors from EIP-55 itself.
EIP55 = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0xde709f2102306220921060314715629080e2fb77",
    "0x27b1fdb04752bbc536007a920d24acb045561c26",
]


@pytest.mark.parametrize("addr", EIP55)
def test_eip55_vectors(addr: str) -> None:
    assert checksum_address(addr) == checksum_address(addr.lower()) == checksum_address("0x" + addr[2:].upper())
    if addr != addr.lower() and addr[2:] != addr[2:].upper():
        assert checksum_address(addr) == addr


def test_usdc_mainnet_address_from_reference() -> None:
    assert checksum_address("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48") == "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


@pytest.mark.parametrize(
    "bad",
    [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",  # last letter's case flipped
        "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA",  # 38 hex digits
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00",
        "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeZ",
        " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "",
        None,
        0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED,
        b"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "vitalik.eth",
    ],
)
def test_bad_addresses_name_themselves(bad: object) -> None:
    with pytest.raises(EvidenceError) as e:
        checksum_address(bad, "custody address")
    assert e.value.reason == "invalid_address"
    assert "custody address" in e.value.message
    assert repr(bad) in e.value.message or str(bad) in e.value.message


def test_list_rules() -> None:
    a, b = EIP55[0], EIP55[1]
    assert checksum_addresses([a.lower(), b]) == (a, b)
    with pytest.raises(InputError):
        checksum_addresses([])
    with pytest.raises(InputError):
        checksum_addresses(a)  # a bare string is not a list of 42 one-character addresses
    with pytest.raises(InputError, match="twice"):
        checksum_addresses([a, a.lower()])


@given(st.binary(min_size=20, max_size=20))
def test_any_20_bytes_round_trip(raw: bytes) -> None:
    lower = "0x" + raw.hex()
    canonical = checksum_address(lower)
    assert canonical.lower() == lower
    assert checksum_address(canonical) == canonical
    assert checksum_address("0x" + raw.hex().upper()) == canonical


@given(st.binary(min_size=20, max_size=20), st.data())
def test_one_flipped_letter_is_caught(raw: bytes, data: st.DataObject) -> None:
    canonical = checksum_address("0x" + raw.hex())
    letters = [i for i, c in enumerate(canonical) if i >= 2 and c.isalpha()]
    if len(letters) < 2:
        return  # too few letters to make a mixed-case typo
    i = data.draw(st.sampled_from(letters))
    typo = canonical[:i] + canonical[i].swapcase() + canonical[i + 1 :]
    body = typo[2:]
    if body == body.lower() or body == body.upper():
        return  # flipping made it all one case: a legitimate unchecksummed spelling
    with pytest.raises(EvidenceError):
        checksum_address(typo)
