// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "./BaseToken.sol";

/// @notice Plain ERC-20 whose decimals are chosen at deployment (18 for an OUSG-like token, or a
/// deliberately wrong value to test the adapter's decimals check).
contract TestToken is BaseToken {
    uint8 private immutable _decimals;

    constructor(string memory name_, string memory symbol_, uint8 decimals_) BaseToken(name_, symbol_) {
        _decimals = decimals_;
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }
}
