"""Inventory collectors: one module per source, each returning JSON-able data.

Every collector reports what the machine says and nothing else: a value it cannot read
is ``None`` and the section's ``"unavailable"`` dict says why (``{"serial": "permission denied: ..."}``).
Parsers of command output are pure functions on text so they can be tested on recorded samples.
"""
