"""Simulator and fakes: virtual-time loop, simulated network with NATs (tests only)."""
