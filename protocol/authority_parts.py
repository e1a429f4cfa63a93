"""Split an ``authority.update`` that would not fit one control-channel frame, and join it again (pure).

Why: an org with hundreds of documents (a task authorization may carry 256 KiB), a thousand
certificates and a long revocation list is far more than the 4 MiB frame limit; an oversized
frame makes the agent close the channel (1009) and reconnect to the same oversized update,
forever. So the server sends at most :data:`~protocol.limits.MAX_AUTHORITY_UPDATE_BYTES` per
message: the first part carries the root, rotations, revocation list and hand-over, and every
part as many certificates, withdrawals and documents (in that order) as fit. The agent keeps the
parts of one connection until the last arrives and applies the joined update as one — so a
complete update never drops a document for a moment because it travels in a later part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from . import limits
from .authority import SignedCert, SignedDocument
from .authority_messages import MAX_CERTS, MAX_DOCUMENTS, AuthorityUpdate

_encoder = msgspec.json.Encoder()
#: Room for the digits of ``part``/``parts`` and the separators, on top of the measured sizes.
_SLACK = 64


class TooLarge(ValueError):
    """Something a single part must carry does not fit in one (e.g. a revocation list near its limit with
    many rotations), or the update needs more than :data:`~protocol.limits.MAX_AUTHORITY_PARTS` parts."""


def encoded_size(message: AuthorityUpdate) -> int:
    """Bytes of ``message`` as the control channel sends it."""
    return len(_encoder.encode(message))


def split_update(update: AuthorityUpdate, budget: int = limits.MAX_AUTHORITY_UPDATE_BYTES) -> list[AuthorityUpdate]:
    """``update`` as one message when it fits ``budget``, else as numbered parts that each do."""
    if encoded_size(update) <= budget:
        return [update]
    first = AuthorityUpdate(root=update.root, rotations=update.rotations, revocations=update.revocations,
                            handover=update.handover, complete=update.complete)
    later = AuthorityUpdate(complete=update.complete)
    items: list[tuple[str, Any]] = [("certs", c) for c in update.certs]
    items += [("withdrawn", w) for w in update.withdrawn]
    items += [("documents", d) for d in update.documents]
    groups: list[dict[str, list[Any]]] = []
    current: dict[str, list[Any]] = {"certs": [], "withdrawn": [], "documents": []}
    used = encoded_size(first) + _SLACK
    if used > budget:
        raise TooLarge(f"the root, rotations and revocation list alone take {used} bytes, more than {budget}")
    for field, item in items:
        size = len(_encoder.encode(item)) + 1
        if used + size > budget and any(current.values()):
            groups.append(current)
            current = {"certs": [], "withdrawn": [], "documents": []}
            used = encoded_size(later) + _SLACK
        if used + size > budget:
            raise TooLarge(f"one {field} entry of {size} bytes does not fit a part of {budget} bytes")
        current[field].append(item)
        used += size
    groups.append(current)
    if len(groups) > limits.MAX_AUTHORITY_PARTS:
        raise TooLarge(f"the update needs {len(groups)} parts; at most {limits.MAX_AUTHORITY_PARTS} are allowed")
    total = len(groups)
    parts = []
    for number, group in enumerate(groups, 1):
        head = first if number == 1 else later
        parts.append(AuthorityUpdate(root=head.root, rotations=head.rotations, revocations=head.revocations,
                                     handover=head.handover, complete=update.complete, certs=group["certs"],
                                     withdrawn=group["withdrawn"], documents=group["documents"], part=number,
                                     parts=total))
    return parts


def join_parts(parts: Sequence[AuthorityUpdate]) -> AuthorityUpdate | str:
    """The update ``parts`` (1..n, in order, all received) were split from; or why they do not make one."""
    if not parts:
        return "no parts"
    total = parts[0].parts
    if len(parts) != total or [p.part for p in parts] != list(range(1, total + 1)):
        return f"parts {[p.part for p in parts]} are not 1..{total} in order"
    if any(p.parts != total or p.complete != parts[0].complete for p in parts):
        return "the parts disagree on how many there are or whether the update is complete"
    if any(p.root is not None or p.rotations or p.revocations is not None or p.handover is not None
           for p in parts[1:]):
        return "only the first part may carry the root, rotations, revocation list and hand-over"
    certs: list[SignedCert] = [c for p in parts for c in p.certs]
    documents: list[SignedDocument] = [d for p in parts for d in p.documents]
    withdrawn = [w for p in parts for w in p.withdrawn]
    if len(certs) > MAX_CERTS or len(documents) > MAX_DOCUMENTS or len(withdrawn) > MAX_DOCUMENTS:
        return (f"the parts carry {len(certs)} certificates, {len(documents)} documents and {len(withdrawn)} "
                f"withdrawals; at most {MAX_CERTS}, {MAX_DOCUMENTS} and {MAX_DOCUMENTS} in all")
    head = parts[0]
    return AuthorityUpdate(root=head.root, rotations=head.rotations, revocations=head.revocations,
                           handover=head.handover, complete=head.complete, certs=certs, documents=documents,
                           withdrawn=withdrawn)
