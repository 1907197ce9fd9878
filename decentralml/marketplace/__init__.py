"""Marketplace backends behind one Protocol (see base.py)."""

from decentralml.marketplace.base import Marketplace

__all__ = ["Marketplace"]
