"""Muon for TorchTitan: Newton-Schulz math, the Muon update rule, Parallel / Distributed scheduling, the builder."""

from .muon import MODES, Muon

__all__ = ["Muon", "MODES"]
