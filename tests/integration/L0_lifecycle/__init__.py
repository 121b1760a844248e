"""Mirrors Triton qa/L0_lifecycle: crash, restart, drain and ownership of the server processes."""
