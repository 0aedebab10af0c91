// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import "./BaseToken.sol";

/// @notice USDC-like test token: 6 decimals, owner can freeze (blacklist) an address and pause
/// all transfers, as Circle's FiatToken can.
contract TestFiatToken is BaseToken {
    bool public paused;
    mapping(address => bool) public isBlacklisted;

    constructor(string memory name_, string memory symbol_) BaseToken(name_, symbol_) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    function blacklist(address account) external onlyOwner {
        isBlacklisted[account] = true;
    }

    function unBlacklist(address account) external onlyOwner {
        isBlacklisted[account] = false;
    }

    function pause() external onlyOwner {
        paused = true;
    }

    function unpause() external onlyOwner {
        paused = false;
    }

    function _checkTransfer(address from, address to) internal view override {
        require(!paused, "paused");
        require(!isBlacklisted[from] && !isBlacklisted[to], "blacklisted");
    }
}
