"""Plain torch network definitions (no host imports)."""
