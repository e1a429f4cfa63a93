"""Get help on the device (issue 18): the user's seat.

- :mod:`.wire` — the local help protocol between ``helpline help`` (window or ``--send``) and the agent.
- :mod:`.diagnostics` — what the agent already knows that a technician wants to see first.
- :mod:`.book` — the open requests, kept across agent restarts (``<state>/help-requests.json``, 0600).
- :mod:`.desk` — the agent feature: ``request.*`` on the control channel, the book, self-service fixes.
- :mod:`.fixes` — Tier 0: the signed fixes this device holds, and running one in the agent (root service).
- :mod:`.endpoint` / :mod:`.local_socket` — answering a caller (direct mode: a Unix socket in the state dir).
- :mod:`.helper_socket` — service mode: the session helper's per-user socket, relayed to the service.
- :mod:`.client`, :mod:`.screenshot`, :mod:`.window` — the caller's side, run as the user.
"""
