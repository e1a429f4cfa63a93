"""Signed self-update on the device: check the release, fetch and verify the artifact, install it
beside the running version, restart into it through the stable launcher, commit or roll back.

:mod:`.launcher` (standard library only) is the process the service starts; :mod:`.download`
fetches an artifact over the agent's mTLS with the signed size and SHA-256 checked while streaming;
:mod:`.install` unpacks it into ``versions/<v>`` without letting an archive write outside;
:mod:`.feature` answers ``update.offer`` and reports ``update.status``.
"""
