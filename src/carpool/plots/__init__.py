"""Figures (matplotlib, imported lazily by callers)."""
