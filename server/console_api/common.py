"""What the console API modules share: rights as JSON."""

from __future__ import annotations

from ..auth.rights import Right


def rights_json(rights_by_group: dict[str, Right]) -> dict[str, list[str]]:
    """``{group: [right names]}``, groups sorted (``*`` = every group)."""
    return {group: rights.as_names() for group, rights in sorted(rights_by_group.items())}
