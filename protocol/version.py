"""Protocol version negotiation: the highest version both sides speak."""

from __future__ import annotations

from .errors import UnsupportedVersion

#: Versions this code base speaks, lowest and highest.
MIN_VERSION = 1
MAX_VERSION = 1


def negotiate(peer_min: int, peer_max: int, *, ours: tuple[int, int] = (MIN_VERSION, MAX_VERSION)) -> int:
    """Return the highest common version or raise :class:`UnsupportedVersion`."""
    low = max(peer_min, ours[0])
    high = min(peer_max, ours[1])
    if peer_min > peer_max or low > high:
        raise UnsupportedVersion(
            f"no common protocol version: peer speaks {peer_min}..{peer_max}, we speak {ours[0]}..{ours[1]}"
        )
    return high
