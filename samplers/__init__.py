"""Sampling algorithms as plain functions (no host imports)."""
