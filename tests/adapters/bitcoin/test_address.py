"""Address validation per network: BIP-173/BIP-350 vectors, well-known addresses, and properties."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bitcoin.address import (  # every network addresses are decoded for, the test stand-in too
    KNOWN_NETWORKS as NETWORKS,
    _bech32_decode,
    decode_address,
    encode_base58check,
    encode_segwit,
    networks_of,
    validate_address,
)
from adapters.bitcoin.address import NETWORKS as PRODUCTION_NETWORKS, TEST_NETWORKS
from adapters.bitcoin.custody import BitcoinCustodyReader, BitcoinRpcClient
from adapters.custody import CustodyVerifier
from rules.errors import EvidenceError, InputError

# --- BIP-350 "valid segwit addresses" with the scriptPubKey each translates to --------------------
BIP350_VALID = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "main", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "test",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "main",
        "5128751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6",
    ),
    ("BC1SW50QGDZ25J", "main", "6002751e"),
    ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", "main", "5210751e76e8199196d454941c45d1b3a323"),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "test",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        "signet",
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        "main",
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
]

# --- BIP-350 "invalid segwit addresses" (reason in the comment); checked on the network of their hrp
BIP350_INVALID = [
    ("tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut", "test"),  # invalid hrp
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", "main"),  # bech32 instead of bech32m
    ("tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf", "test"),  # bech32 instead of bech32m
    ("BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL", "main"),  # bech32 instead of bech32m
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh", "main"),  # bech32m instead of bech32
    ("tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47", "test"),  # bech32m instead of bech32
    ("bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4", "main"),  # invalid char in checksum
    ("BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R", "main"),  # invalid witness version
    ("bc1pw5dgrnzv", "main"),  # program length 1
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav", "main"),  # 41 bytes
    ("BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P", "main"),  # v0 program must be 20 or 32 bytes
    ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq", "test"),  # mixed case
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf", "main"),  # > 4 bits zero padding
    ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j", "test"),  # non-zero padding
    ("bc1gmk9yu", "main"),  # empty data section
]


def _script(addr: str, network: str) -> str:
    return validate_address(addr, network).script_pubkey.hex()


@pytest.mark.parametrize("address,network,script", BIP350_VALID)
def test_bip350_valid_addresses_decode_to_their_script(address: str, network: str, script: str) -> None:
    assert _script(address, network) == script


@pytest.mark.parametrize("address,network", BIP350_INVALID)
def test_bip350_invalid_addresses_are_refused_everywhere(address: str, network: str) -> None:
    with pytest.raises(EvidenceError) as e:
        validate_address(address, network)
    assert e.value.reason == "invalid_address"
    assert networks_of(address) == []


@pytest.mark.parametrize(
    "string,valid",
    [
        ("A12UEL5L", True),  # BIP-173 bech32 strings
        ("abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw", True),
        ("split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w", True),
        ("A1LQFN3A", True),  # BIP-350 bech32m strings
        ("abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx", True),
        ("?1v759aa", True),
        ("an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4", False),
        ("qyrz8wqd2c9m", False),  # no separator
        ("1qyrz8wqd2c9m", False),  # empty hrp
        ("y1b0jsk6g", False),  # invalid data character
        ("in1muywd", False),  # checksum too short
        ("M1VUXWEZ", False),  # checksum computed over the upper-case hrp
        ("\x201xj0phk", False),  # hrp character out of range
    ],
)
def test_bech32_and_bech32m_strings(string: str, valid: bool) -> None:
    assert (_bech32_decode(string) is not None) is valid


# --- base58check: well-known mainnet addresses and addresses the litecoind regtest node produced ---


def test_genesis_p2pkh_address() -> None:
    d = validate_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "main")
    assert d.kind == "p2pkh"
    assert d.program.hex() == "62e907b15cbf27d5425399ebf6f0fb50ebb88f18"
    assert d.script_pubkey.hex() == "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"


def test_mainnet_p2sh_address() -> None:
    d = validate_address("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "main")
    assert d.kind == "p2sh"
    assert d.script_pubkey.hex() == "a914" + d.program.hex() + "87"


@pytest.mark.parametrize(
    "address,kind,script",
    [
        # litecoind 0.21 -regtest: getnewaddress legacy / p2sh-segwit / bech32, validateaddress scriptPubKey
        ("mqeebgsYb7dyoeJrCdCyv4KYmbaxmCQPpg", "p2pkh", None),
        ("QTmhZTeRJcLvaMbw5bS7zkYy2yAhn7UDZp", "p2sh", "a9144e9f39ca4688ff102128ea4ccda34105324305b087"),
        ("2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc", "p2sh", "a9144e9f39ca4688ff102128ea4ccda34105324305b087"),
        ("rltc1q9kudlwx9k6snwfkd7eedtsa0e83fqxh488u267", "p2wpkh", "00142db8dfb8c5b6a13726cdf672d5c3afc9e2901af5"),
        (
            "rltc1pqqqsyqcyq5rqwzqfpg9scrgwpugpzysnzs23v9ccrydpk8qarc0s6xadn6",
            "p2tr",
            "5120000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ),
    ],
)
def test_litecoin_regtest_addresses_as_the_node_reports_them(address: str, kind: str, script: str | None) -> None:
    d = validate_address(address, "litecoin-regtest")
    assert d.kind == kind
    if script is not None:
        assert d.script_pubkey.hex() == script


# --- network separation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address,configured,belongs",
    [
        ("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "test", "main"),
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "regtest", "main"),
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "main", "test"),
        ("rltc1q9kudlwx9k6snwfkd7eedtsa0e83fqxh488u267", "regtest", "litecoin-regtest"),
        ("QTmhZTeRJcLvaMbw5bS7zkYy2yAhn7UDZp", "main", "litecoin-regtest"),
        ("mqeebgsYb7dyoeJrCdCyv4KYmbaxmCQPpg", "main", "test"),
    ],
)
def test_address_of_another_network_is_refused_naming_the_expected_one(
    address: str, configured: str, belongs: str
) -> None:
    with pytest.raises(EvidenceError) as e:
        validate_address(address, configured)
    assert e.value.reason == "wrong_network"
    assert f"({configured})" in e.value.message
    assert f"({belongs})" in e.value.message


def test_unknown_network_is_an_input_error() -> None:
    with pytest.raises(InputError):
        validate_address("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "mainnet")


@pytest.mark.parametrize("bad", ["", " ", "1", "bc1", "0OIl", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfN", "x" * 5000])
def test_garbage_is_invalid(bad: str) -> None:
    with pytest.raises(EvidenceError) as e:
        validate_address(bad, "main")
    assert e.value.reason == "invalid_address"


def test_bech32_canonical_form_is_lower_case() -> None:
    assert validate_address("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "main").address == (
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
    )


# --- properties ---------------------------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


@st.composite
def addresses(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    """(address, network, kind, program) built from random hashes for every network and kind."""
    network = draw(st.sampled_from(sorted(NETWORKS)))
    p = NETWORKS[network]
    kind = draw(st.sampled_from(["p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr"]))
    if kind in ("p2pkh", "p2sh"):
        program = draw(st.binary(min_size=20, max_size=20))
        version = draw(st.sampled_from(p.p2pkh if kind == "p2pkh" else p.p2sh))
        return encode_base58check(version, program), network, kind, program
    size = 20 if kind == "p2wpkh" else 32
    program = draw(st.binary(min_size=size, max_size=size))
    return encode_segwit(p.hrp, 1 if kind == "p2tr" else 0, program), network, kind, program


@given(addresses())
def test_round_trip(a: tuple[str, str, str, bytes]) -> None:
    address, network, kind, program = a
    d = validate_address(address, network)
    assert (d.kind, d.program) == (kind, program)


@settings(max_examples=300)
@given(addresses(), st.data())
def test_one_character_substitution_is_rejected(a: tuple[str, str, str, bytes], data: st.DataObject) -> None:
    address, network, _, _ = a
    i = data.draw(st.integers(0, len(address) - 1))
    alphabet = _BECH if address.lower().startswith(NETWORKS[network].hrp + "1") else _B58
    c = data.draw(st.sampled_from([x for x in alphabet if x != address[i].lower() and x != address[i]]))
    mutated = address[:i] + c + address[i + 1 :]
    # bech32 detects any substitution; base58check misses one in 2**32 (accepted as a risk of 0 here).
    assert decode_address(mutated, network) is None


@given(addresses(), st.data())
def test_adjacent_swap_is_rejected(a: tuple[str, str, str, bytes], data: st.DataObject) -> None:
    address, network, _, _ = a
    i = data.draw(st.integers(0, len(address) - 2))
    if address[i] == address[i + 1]:
        return
    mutated = address[:i] + address[i + 1] + address[i] + address[i + 2 :]
    assert decode_address(mutated, network) is None


@given(addresses())
def test_valid_elsewhere_means_wrong_network_not_invalid(a: tuple[str, str, str, bytes]) -> None:
    address, network, _, _ = a
    for other in NETWORKS:
        if other in networks_of(address):
            assert decode_address(address, other) is not None
            continue
        with pytest.raises(EvidenceError) as e:
            validate_address(address, other)
        assert e.value.reason == "wrong_network"


# --- the test stand-in network is opt-in -----------------------------------------------------------


@dataclass(frozen=True)
class _Asset:
    """A registry entry as the adapters read it (``adapters.custody.RegistryAsset``)."""

    symbol: str = "BTC"
    chain: str = "bitcoin"
    network: str = "regtest"
    contract: str | None = None
    decimals: int = 8
    restrictions: dict[str, str] = field(default_factory=dict)


def test_the_litecoin_stand_in_is_a_test_network_not_a_bitcoin_one() -> None:
    assert "litecoin-regtest" in TEST_NETWORKS and "litecoin-regtest" not in PRODUCTION_NETWORKS
    client = BitcoinRpcClient("http://127.0.0.1:9/", user="u", password="p", retries=0)
    with pytest.raises(InputError) as e:
        BitcoinCustodyReader(client, "litecoin-regtest")
    assert "allow_test_networks" in e.value.message
    assert BitcoinCustodyReader(client, "litecoin-regtest", allow_test_networks=True).params.hrp == "rltc"


def test_the_verifier_uses_the_stand_in_only_when_settings_allow_it() -> None:
    node = {"rpc_url": "http://127.0.0.1:9/", "user": "u", "password": "p", "retries": 0, "timeout_s": 1}
    address = "mqeebgsYb7dyoeJrCdCyv4KYmbaxmCQPpg"
    with pytest.raises(InputError) as e:
        CustodyVerifier(bitcoin={**node, "network": "litecoin-regtest"}).verify(_Asset(), [address])
    assert e.value.where == "bitcoin.network" and "allow_test_networks = true" in e.value.message
    allowed = CustodyVerifier(bitcoin={**node, "network": "litecoin-regtest", "allow_test_networks": True})
    with pytest.raises(EvidenceError) as ev:  # configured: now it asks the node (there is none on port 9)
        allowed.verify(_Asset(), [address])
    assert ev.value.reason == "node_unreachable"
