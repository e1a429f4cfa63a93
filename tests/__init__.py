"""Helpline test suite (a package so helpers import as tests.harness, tests.xvfb)."""
