"""Marketplace backends behind one Protocol and optional capabilities (see base.py); their
shared rules are in rules.py."""

from decentralml.marketplace.base import AuditsChain, ChargesFees, DevFaucet, Marketplace

__all__ = ["AuditsChain", "ChargesFees", "DevFaucet", "Marketplace"]
