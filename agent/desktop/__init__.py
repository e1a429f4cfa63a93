"""The agent split in two: the root service and a helper in each user's graphical session.

- :mod:`.tracker` — logind's sessions over D-Bus and the pure rule for whom to ask.
- :mod:`.broker` — the service's local socket: SO_PEERCRED-checked helpers, who is in front.
- :mod:`.link` — one accepted helper: what the service asked and may get answers to.
- :mod:`.remote_ui` / :mod:`.relay` — the consent seam and the screen runner carried out by a helper.
- :mod:`.helper` / :mod:`.downloads` — the helper itself, running as the user.

The wire format is :mod:`protocol.desktop`.
"""
