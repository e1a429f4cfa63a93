"""Typed control-channel messages.

Every message is a frozen msgspec Struct that validates on decode: types, required
fields, string/array limits. On the wire: ``{"v": 1, "type": "...", "id": "...", ...}``.
Add a message by subclassing :class:`Message` with a ``tag``; the codec finds it.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from . import limits

#: Ids end up in file names and URL paths on the peer: never ``.``/``..`` or a leading dot
#: (the agent confines them too: :func:`common.files.confined`).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_ID_LEN,
                                 pattern=r"^[A-Za-z0-9_:-][A-Za-z0-9._:-]*$")]
ShortStr = Annotated[str, msgspec.Meta(max_length=limits.MAX_SHORT_STR)]
Text = Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)]
Pem = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_TEXT)]
Version = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Checksum = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
SectionName = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]


def new_id() -> str:
    """A fresh message id (64 random bits, hex)."""
    return secrets.token_hex(8)


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of every control-channel message."""

    v: Version = 1
    id: Id = msgspec.field(default_factory=new_id)

    #: Which side may send it: "agent", "server" or "both".
    sender: ClassVar[str] = "both"

    @classmethod
    def type_name(cls) -> str:
        tag = cls.__struct_config__.tag
        assert isinstance(tag, str)
        return tag


# --- connection ----------------------------------------------------------------------------


class Hello(Message, frozen=True, tag="hello"):
    """First message from the agent: who it is and what it speaks."""

    sender: ClassVar[str] = "agent"
    min_version: Version
    max_version: Version
    agent_version: ShortStr
    device_id: Id
    capabilities: Annotated[list[ShortStr], msgspec.Meta(max_length=limits.MAX_SMALL_LIST)] = []


class InventoryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the device's group lets the agent collect (issue 17: personal data).

    ``omit``: sections the agent must not collect (local accounts, login history switched off);
    ``login_days``: how many days of login history to send (the server's retention).
    """

    omit: Annotated[list[SectionName], msgspec.Meta(max_length=limits.MAX_SECTIONS)] = []
    login_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] | None = None


class Welcome(Message, frozen=True, tag="welcome"):
    """Server's answer to hello: the negotiated version and channel settings."""

    sender: ClassVar[str] = "server"
    version: Version
    server_version: ShortStr
    keepalive_s: Annotated[float, msgspec.Meta(gt=0, le=3600)]
    cert_renew_due: bool = False
    inventory_checksums: dict[SectionName, Checksum] | None = None
    #: Highest health seq the server stores for this device; the agent numbers new samples above it
    #: (its outbox may have been lost). Only sent to agents with the "health.seq" capability and
    #: omitted from the wire when unset, so agents and servers without it still decode.
    health_seq: Seq | msgspec.UnsetType = msgspec.UNSET
    #: Only sent to agents with the "inventory.policy" capability (older agents refuse unknown fields).
    inventory_policy: InventoryPolicy | msgspec.UnsetType = msgspec.UNSET


class Ping(Message, frozen=True, tag="ping"):
    """Keepalive probe; the peer answers with pong."""


class Pong(Message, frozen=True, tag="pong"):
    in_reply_to: Id


class Error(Message, frozen=True, tag="error"):
    """Something the peer sent was refused; ``code`` is machine-readable."""

    code: ShortStr
    message: Text
    in_reply_to: Id | None = None


class Ack(Message, frozen=True, tag="ack"):
    """Generic positive acknowledgement."""

    in_reply_to: Id


class CertRenewRequest(Message, frozen=True, tag="cert.renew.request"):
    """Agent asks for a new certificate for a freshly generated key."""

    sender: ClassVar[str] = "agent"
    csr: Pem


class CertRenewResponse(Message, frozen=True, tag="cert.renew.response"):
    sender: ClassVar[str] = "server"
    in_reply_to: Id
    certificate: Pem


# --- inventory and health (CMDB) -----------------------------------------------------------


class InventoryReport(Message, frozen=True, tag="inventory"):
    """Full or delta inventory.

    ``sections`` holds only the changed sections (all of them when ``full``);
    ``checksums`` names the checksum of every section of the agent's current inventory,
    so the server can tell whether its copy of the unsent sections still matches.
    """

    sender: ClassVar[str] = "agent"
    full: bool
    sections: Annotated[dict[SectionName, Any], msgspec.Meta(max_length=limits.MAX_SECTIONS)]
    checksums: Annotated[dict[SectionName, Checksum], msgspec.Meta(max_length=limits.MAX_SECTIONS)]


class SectionRejected(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An inventory section the server refused (it keeps its previous copy, if any), and why."""

    section: SectionName
    code: ShortStr
    reason: ShortStr


class InventoryAck(Message, frozen=True, tag="inventory.ack"):
    """The report is applied; ``checksums`` is what the server now holds per section."""

    sender: ClassVar[str] = "server"
    in_reply_to: Id
    checksums: dict[SectionName, Checksum]
    #: Sections of this report refused one by one (the others are stored). Only sent to agents with the
    #: "inventory.partial" capability and omitted from the wire when unset: older agents refuse unknown fields.
    rejected: Annotated[list[SectionRejected], msgspec.Meta(max_length=limits.MAX_SECTIONS)] | msgspec.UnsetType = (
        msgspec.UNSET)


class InventoryRequest(Message, frozen=True, tag="inventory.request"):
    """Server lost track (or the delta didn't match): send a full inventory."""

    sender: ClassVar[str] = "server"
    reason: ShortStr
    #: The group's changed personal-data policy (issue 17), followed instead of the welcome's until the next
    #: connection. Only sent to agents with the "inventory.policy.push" capability; omitted from the wire when unset.
    inventory_policy: InventoryPolicy | msgspec.UnsetType = msgspec.UNSET


class HealthSample(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: Seq
    ts: Annotated[float, msgspec.Meta(ge=0)]
    metrics: dict[Annotated[str, msgspec.Meta(max_length=64)], Any]


class HealthGap(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Samples the agent had to drop (outbox full): reported, never silent."""

    from_seq: Seq
    to_seq: Seq
    dropped: Seq


class HealthBatch(Message, frozen=True, tag="health.batch"):
    sender: ClassVar[str] = "agent"
    samples: Annotated[list[HealthSample], msgspec.Meta(max_length=limits.MAX_HEALTH_BATCH)]
    gaps: Annotated[list[HealthGap], msgspec.Meta(max_length=limits.MAX_HEALTH_BATCH)] = []


class SampleRejected(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A health sample the server refused and did not store; ``code`` is ``invalid`` or ``too_large``."""

    seq: Seq
    code: ShortStr
    reason: ShortStr


class HealthAck(Message, frozen=True, tag="health.ack"):
    """Every sample with ``seq <= up_to`` is stored or named in ``rejected``: the agent may delete them."""

    sender: ClassVar[str] = "server"
    in_reply_to: Id
    up_to: Seq
    #: Samples of this batch refused one by one (the others are stored), so one bad sample never holds
    #: up the stream. Only sent to agents with the "health.partial" capability and omitted from the wire
    #: when unset: older agents refuse unknown fields (they delete the refused samples with the rest).
    rejected: Annotated[list[SampleRejected], msgspec.Meta(max_length=limits.MAX_HEALTH_BATCH)] | msgspec.UnsetType = (
        msgspec.UNSET)


Role = Literal["agent", "server"]
