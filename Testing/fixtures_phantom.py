"""Phantom fixtures (owned by the phantom work): generated once per test session."""
