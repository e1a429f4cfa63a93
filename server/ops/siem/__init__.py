"""Audit records streamed to a SIEM."""
