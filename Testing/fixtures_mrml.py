"""MRML fixtures (owned by the MRML adapter work)."""
