"""SMAP data access (placeholder)."""
