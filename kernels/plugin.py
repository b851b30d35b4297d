"""Bench-op registration (being written)."""
