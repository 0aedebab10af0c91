"""The restriction views the Ethereum reader reads are the ABI the policy loader checks names against
(rules/schema/restriction_views.abi.json): one file, so a name the loader accepts is one the reader reads."""

from __future__ import annotations

import pytest

from adapters.ethereum.custody import RESTRICTION_KINDS, _parse_restrictions, restriction_views
from rules.errors import InputError
from rules.policy.restrictions import restriction_abi

TOKEN = "0x6c3ea9036406852006290770BEdFcAbA0e23A0e8"


def test_the_reader_and_the_loader_read_one_abi():
    assert restriction_views() == restriction_abi()
    assert restriction_views()["paused"] == () and restriction_views()["isFrozen"] == ("address",)


def test_known_views_of_the_right_shape_pass():
    assert _parse_restrictions({"pause": "paused", "blacklist": "isFrozen"}, TOKEN) == {
        "pause": "paused", "blacklist": "isFrozen"}


@pytest.mark.parametrize("restrictions, words", [
    ({"blacklist": "isBanned"}, "'isBanned' is not a blacklist view this adapter reads"),
    ({"pause": "isFrozen"}, "'isFrozen' is not a pause view"),
    ({"allowlist": "paused"}, "'paused' is not an allowlist view"),
])
def test_an_unknown_or_misshapen_view_is_refused(restrictions, words):
    with pytest.raises(InputError) as exc:
        _parse_restrictions(restrictions, TOKEN)
    assert words in str(exc.value)
    assert set(RESTRICTION_KINDS) == {"pause", "blacklist", "allowlist"}
