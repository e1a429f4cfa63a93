"""Helpline's version, in one place: the package metadata (pyproject), the agent's hello and
the server's welcome and OpenAPI document all read it from here."""

__version__ = "0.1.0"
