"""The bottom layer: small utilities that agent/, server/, certs/ and helpline/ share.

Nothing here imports any of those packages (a test checks), and nothing here needs a
third-party library, so every install — agent-only or server-only — has all of it.
"""
