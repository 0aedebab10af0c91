// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "./BaseToken.sol";

/// @notice Tokenized fund share (BUIDL/USTB-like): 6 decimals, and only allow-listed holders may
/// receive shares, so a transfer or mint to any other address reverts.
contract FundToken is BaseToken {
    mapping(address => bool) public isAllowed;

    constructor(string memory name_, string memory symbol_) BaseToken(name_, symbol_) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function setAllowed(address account, bool allowed) external onlyOwner {
        isAllowed[account] = allowed;
    }

    function _checkTransfer(address, address to) internal view override {
        require(isAllowed[to], "holder not allowed");
    }
}
