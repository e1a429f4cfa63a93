"""Authority a compromised server cannot forge: the documents and their exact signed bytes (pure, no I/O).

Theory of operation. An offline **org root** (Ed25519, :class:`RootInfo`) certifies credentials
(:class:`CredentialCert`): approvers, technicians, automation keys and revocation-only keys. Anything
that acts on a device without the person's consent travels as a :class:`SignedDocument` — a body
(:class:`UnattendedGrant`, :class:`TaskAuthorization`, :class:`SelfServiceFix`,
:class:`ReleaseManifest`, :class:`ApproverSetChange`) in canonical bytes plus approvers'
:class:`Approval`\\ s. The device pins the root's fingerprint at install time and checks the whole
chain itself (:mod:`certs.authority`); the server only stores and relays.

Rules of this file:

- Bodies travel as the exact canonical string that was signed (sorted-key compact JSON, msgspec's
  encoder). A verifier decodes that string and requires that re-encoding gives the same bytes, so
  two parsers can never read one signed text two ways (duplicate keys, ``1`` vs ``1.0``).
- Every signature is domain-separated: the signed message starts with :func:`domain_prefix` of the
  document's kind, so a signature over a grant can never be replayed as a task, a certificate or a
  technician proof. Ed25519 signs ``prefix + sha256(body)``; a WebAuthn assertion's challenge is
  ``sha256(prefix + body)`` (:func:`ed25519_message`, :func:`webauthn_challenge`).
- Structs validate when decoded (field constraints) and when built (``__post_init__`` checks the
  invariants between fields and that every number is finite).
- Every time is epoch seconds, and every function that needs "now" takes it as an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Annotated, Any, Final, Literal, TypeAlias, TypeVar

import msgspec

from . import limits
from .grants import Action, Window

# --- field types ----------------------------------------------------------------------------

#: Epoch seconds; 1e11 is the year 5138, far past any sane expiry (and keeps inf out).
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=1e11)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_SHORT_STR)]
Reason = Annotated[str, msgspec.Meta(max_length=limits.MAX_SHORT_STR)]
CredentialId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
DocumentId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Hex64 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
B64 = Annotated[str, msgspec.Meta(min_length=4, max_length=8192, pattern=r"^[A-Za-z0-9+/]+={0,2}$")]
B64Url = Annotated[str, msgspec.Meta(min_length=1, max_length=1366, pattern=r"^[A-Za-z0-9_-]+$")]
Nonce = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{16,128}$")]
Origin = Annotated[str, msgspec.Meta(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", max_length=256)]
RpId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9.-]{1,253}$")]
SmallList = msgspec.Meta(max_length=256)

CredentialKind = Literal["approver", "technician", "automation", "revoker"]
DocumentKind = Literal["grant", "task", "fix", "release", "approver_set"]
#: Everything a signature can be made over; each has its own domain prefix.
SignedKind = Literal["grant", "task", "fix", "release", "approver_set", "credential", "revocation_list",
                     "root_rotation", "technician_proof"]

DOCUMENT_KINDS: Final[frozenset[str]] = frozenset({"grant", "task", "fix", "release", "approver_set"})

#: Which credential kinds may sign each kind (automation is added only where the policy says so).
SIGNER_KINDS: Final[dict[str, frozenset[str]]] = {
    "grant": frozenset({"approver"}),
    "task": frozenset({"approver"}),
    "fix": frozenset({"approver"}),
    "release": frozenset({"approver"}),
    "approver_set": frozenset({"approver"}),
    "revocation_list": frozenset({"revoker"}),
    "technician_proof": frozenset({"technician"}),
}


def domain_prefix(kind: SignedKind) -> bytes:
    """The bytes every signed message of ``kind`` starts with (NUL-terminated, so no kind prefixes another)."""
    return b"helpline-authority-v1/" + kind.encode() + b"\x00"


def ed25519_message(kind: SignedKind, body: bytes) -> bytes:
    """What an Ed25519 key signs for ``body`` of ``kind``: the domain prefix and the body's SHA-256."""
    return domain_prefix(kind) + hashlib.sha256(body).digest()


def webauthn_challenge(kind: SignedKind, body: bytes) -> bytes:
    """The WebAuthn challenge that approves ``body`` of ``kind``: SHA-256 over the prefix and the body."""
    return hashlib.sha256(domain_prefix(kind) + body).digest()


def fingerprint(public_key: bytes) -> str:
    """SHA-256 hex of a public key's bytes (raw Ed25519, or the COSE key's CBOR)."""
    return hashlib.sha256(public_key).hexdigest()


def b64decode(text: str) -> bytes | None:
    """Strict standard base64 → bytes, or None for anything else (peer input never raises)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _finite(*numbers: float) -> None:
    for number in numbers:
        if not math.isfinite(number):
            raise ValueError("numbers must be finite")


def _window(not_before: float, not_after: float) -> None:
    _finite(not_before, not_after)
    if not_after <= not_before:
        raise ValueError("not_after must be later than not_before")


# --- the root ---------------------------------------------------------------------------------


class RootInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The org root's public half, as agents get it with what the administrator deploys."""

    #: Raw Ed25519 public key (32 bytes), base64.
    public_key: B64
    #: SHA-256 hex of the raw key: what agents pin and administrators compare.
    fingerprint: Hex64
    name: Name
    created_at: Timestamp

    def __post_init__(self) -> None:
        _finite(self.created_at)
        raw = b64decode(self.public_key)
        if raw is None or len(raw) != 32:
            raise ValueError("root public_key must be 32 raw Ed25519 bytes in base64")
        if fingerprint(raw) != self.fingerprint:
            raise ValueError("root fingerprint is not the SHA-256 of its public key")


class RootRotationBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The old root hands over to a new one (signed by the old root)."""

    previous_fingerprint: Hex64
    new_root: RootInfo
    issued_at: Timestamp
    reason: Reason = ""

    def __post_init__(self) -> None:
        _finite(self.issued_at)
        if self.previous_fingerprint == self.new_root.fingerprint:
            raise ValueError("a rotation must name a different root")


class RootRotation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A :class:`RootRotationBody` in canonical bytes and the old root's Ed25519 signature."""

    body: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)]
    signature: B64


# --- credentials ------------------------------------------------------------------------------


class Ed25519Key(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="ed25519",
                 tag_field="type"):
    """A CLI-held or automation key: raw Ed25519 public key, base64."""

    raw: B64

    def __post_init__(self) -> None:
        raw = b64decode(self.raw)
        if raw is None or len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 raw bytes in base64")

    def key_bytes(self) -> bytes:
        return base64.b64decode(self.raw)


class PasskeyKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="cose",
                 tag_field="type"):
    """A WebAuthn passkey: its COSE public key (CBOR bytes, base64) and where it may be used."""

    cose_key: B64
    #: The relying party the passkey belongs to; assertions must carry SHA-256 of it.
    rp_id: RpId
    #: The WebAuthn credential id (base64url, as browsers give it), for allowCredentials.
    webauthn_id: B64Url
    #: Origins (scheme://host[:port]) an assertion's clientDataJSON may name.
    origins: Annotated[list[Origin], msgspec.Meta(min_length=1, max_length=16)]

    def __post_init__(self) -> None:
        if b64decode(self.cose_key) is None:
            raise ValueError("cose_key must be base64")

    def key_bytes(self) -> bytes:
        return base64.b64decode(self.cose_key)


PublicKey: TypeAlias = Ed25519Key | PasskeyKey


class CredentialCert(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One credential the root vouches for, until ``not_after``."""

    credential_id: CredentialId
    kind: CredentialKind
    #: The person (or automation) holding it. Four-eyes counts distinct holders, so the
    #: administrator gives one person the same holder name on every credential.
    holder: Name
    public_key: PublicKey
    #: The root that issued it (a rotated root re-issues its certificates).
    root_fingerprint: Hex64
    not_before: Timestamp
    not_after: Timestamp
    issued_at: Timestamp

    def __post_init__(self) -> None:
        _window(self.not_before, self.not_after)
        _finite(self.issued_at)


class SignedCert(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A :class:`CredentialCert` in canonical bytes and the root's Ed25519 signature."""

    body: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)]
    signature: B64


def key_fingerprint(key: PublicKey) -> str:
    """What the ceremony compares: SHA-256 of the raw Ed25519 key or of the COSE key bytes."""
    return fingerprint(key.key_bytes())


# --- signatures -------------------------------------------------------------------------------


class Ed25519Signature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="ed25519",
                       tag_field="type"):
    """Ed25519 over :func:`ed25519_message`, base64."""

    signature: B64


class WebAuthnAssertion(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag="webauthn",
                        tag_field="type"):
    """A passkey's assertion whose challenge is :func:`webauthn_challenge` (each field base64)."""

    authenticator_data: B64
    client_data_json: B64
    signature: B64


Signature: TypeAlias = Ed25519Signature | WebAuthnAssertion


class Approval(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One credential's signature over a body."""

    credential_id: CredentialId
    signature: Signature


# --- revocation ---------------------------------------------------------------------------------


class RevocationList(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What is revoked, valid only briefly: an agent whose list expired stops honouring unattended access."""

    #: Grows with every list; an agent refuses one older than the newest it has seen.
    sequence: Annotated[int, msgspec.Meta(ge=1, le=2**53)]
    issued_at: Timestamp
    expires_at: Timestamp
    credentials: Annotated[list[CredentialId], msgspec.Meta(max_length=100_000)] = []
    #: A document's own id (grant_id, task_id, …) or the SHA-256 hex of its body.
    documents: Annotated[list[DocumentId], msgspec.Meta(max_length=100_000)] = []

    def __post_init__(self) -> None:
        _window(self.issued_at, self.expires_at)


class SignedRevocationList(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A :class:`RevocationList` in canonical bytes, signed by a revoker credential."""

    body: Annotated[str, msgspec.Meta(max_length=limits.MAX_REVOCATION_LIST_BYTES)]
    approval: Approval


# --- document bodies --------------------------------------------------------------------------


class UnattendedGrant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Unattended access to devices or groups, for named technicians, actions and windows."""

    grant_id: DocumentId
    devices: Annotated[list[Name], SmallList] = []
    groups: Annotated[list[Name], SmallList] = []
    #: Technician credential ids that may use it …
    technicians: Annotated[list[CredentialId], SmallList] = []
    #: … and/or holder names of technician certificates.
    technician_names: Annotated[list[Name], SmallList] = []
    actions: Annotated[list[Action], msgspec.Meta(min_length=1, max_length=8)]
    #: With ``files``: the device paths the technician may fetch (glob patterns, ``~`` = the logged-in user's
    #: home, e.g. ``~/Downloads/*``, ``/var/log/app/*.log``); nothing outside them, whatever the server asks.
    paths: Annotated[list[Annotated[str, msgspec.Meta(min_length=2, max_length=256, pattern=r"^[~/]")]],
                     msgspec.Meta(max_length=32)] = []
    #: Device-local windows; empty = any time within not_before..not_after.
    windows: Annotated[list[Window], msgspec.Meta(max_length=32)] = []
    not_before: Timestamp
    not_after: Timestamp
    issuer: Name
    issued_at: Timestamp
    reason: Reason = ""

    def __post_init__(self) -> None:
        _window(self.not_before, self.not_after)
        _finite(self.issued_at)
        if not self.devices and not self.groups:
            raise ValueError("a grant names at least one device or group")
        if not self.technicians and not self.technician_names:
            raise ValueError("a grant names at least one technician")


class TaskAuthorization(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A maintenance task: which action (and script, by hash) with which parameters, where and when."""

    task_id: DocumentId
    #: A catalog action name (``script``, ``updates``, …).
    action: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,64}$")]
    script_sha256: Hex64 | None = None
    params: Annotated[dict[str, Any], msgspec.Meta(max_length=64)] = {}
    devices: Annotated[list[Name], SmallList] = []
    groups: Annotated[list[Name], SmallList] = []
    #: Who may start it by hand (each run then carries their proof); empty = only on schedule.
    technicians: Annotated[list[CredentialId], SmallList] = []
    technician_names: Annotated[list[Name], SmallList] = []
    #: Five-field cron expression on the device's clock: each occurrence runs at most once.
    schedule: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    windows: Annotated[list[Window], msgspec.Meta(max_length=32)] = []
    not_before: Timestamp
    not_after: Timestamp
    issuer: Name
    issued_at: Timestamp
    reason: Reason = ""

    def __post_init__(self) -> None:
        _window(self.not_before, self.not_after)
        _finite(self.issued_at)
        if not self.devices and not self.groups:
            raise ValueError("a task names at least one device or group")
        if (self.action == "script") != (self.script_sha256 is not None):
            raise ValueError("script_sha256 is required for the script action and only for it")
        if self.schedule is not None and len(self.schedule.split()) != 5:
            raise ValueError("schedule must be a five-field cron expression")


class ParamLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the person at the device may choose for one parameter of a self-service fix."""

    type: Literal["int", "float", "str", "bool"]
    minimum: float | None = None
    maximum: float | None = None
    choices: Annotated[list[str | int | float], msgspec.Meta(max_length=64)] | None = None
    max_length: Annotated[int, msgspec.Meta(ge=0, le=4096)] | None = None
    required: bool = False

    def __post_init__(self) -> None:
        _finite(*(n for n in (self.minimum, self.maximum) if n is not None))
        for choice in self.choices or []:
            if isinstance(choice, float):
                _finite(choice)


class RunBudget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """At most ``max_runs`` runs within any ``per_seconds``."""

    max_runs: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    per_seconds: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)]

    def __post_init__(self) -> None:
        _finite(self.per_seconds)
        if self.per_seconds <= 0:
            raise ValueError("per_seconds must be positive")


class SelfServiceFix(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A fix the person at the device may start, within parameter limits and a run budget."""

    fix_id: DocumentId
    title: Name
    action: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,64}$")]
    script_sha256: Hex64 | None = None
    params: Annotated[dict[str, ParamLimit], msgspec.Meta(max_length=64)] = {}
    budget: RunBudget
    devices: Annotated[list[Name], SmallList] = []
    groups: Annotated[list[Name], SmallList] = []
    not_before: Timestamp
    not_after: Timestamp
    issuer: Name
    issued_at: Timestamp

    def __post_init__(self) -> None:
        _window(self.not_before, self.not_after)
        _finite(self.issued_at)
        if not self.devices and not self.groups:
            raise ValueError("a fix names at least one device or group")
        if (self.action == "script") != (self.script_sha256 is not None):
            raise ValueError("script_sha256 is required for the script action and only for it")


class Artifact(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._+-]{1,200}$")]
    sha256: Hex64
    size: Annotated[int, msgspec.Meta(ge=0, le=2**40)]


class ReleaseManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An agent release: self-update installs only artifacts whose hashes a manifest lists."""

    #: ``MAJOR.MINOR.PATCH`` with an optional ``-pre.release`` and ``+build`` (SemVer order; the device
    #: refuses a manifest that is not newer than what it runs).
    version: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z.+-]{1,64}$")]
    artifacts: Annotated[list[Artifact], msgspec.Meta(min_length=1, max_length=64)]
    released_at: Timestamp
    #: After this the manifest is expired: a withheld-then-replayed release is refused.
    not_after: Timestamp
    notes: Reason = ""

    def __post_init__(self) -> None:
        _window(self.released_at, self.not_after)


class ApproverSetChange(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The approvers whose signatures count from now on (a subset of the root-certified ones)."""

    change_id: DocumentId
    #: Grows with every change; an agent refuses one older than the set it applied.
    sequence: Annotated[int, msgspec.Meta(ge=1, le=2**53)]
    approvers: Annotated[list[CredentialId], msgspec.Meta(min_length=1, max_length=1024)]
    issued_at: Timestamp
    reason: Reason = ""

    def __post_init__(self) -> None:
        _finite(self.issued_at)


Body: TypeAlias = UnattendedGrant | TaskAuthorization | SelfServiceFix | ReleaseManifest | ApproverSetChange

BODY_TYPES: Final[dict[str, type[Body]]] = {
    "grant": UnattendedGrant,
    "task": TaskAuthorization,
    "fix": SelfServiceFix,
    "release": ReleaseManifest,
    "approver_set": ApproverSetChange,
}


class SignedDocument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the server stores and relays: a body in canonical bytes and the approvals gathered so far."""

    kind: DocumentKind
    body: Annotated[str, msgspec.Meta(max_length=256 * 1024)]
    approvals: Annotated[list[Approval], msgspec.Meta(max_length=16)] = []


def document_id(body: Body) -> str:
    """The id a body declares for itself (what revocation lists and ledgers name)."""
    if isinstance(body, UnattendedGrant):
        return body.grant_id
    if isinstance(body, TaskAuthorization):
        return body.task_id
    if isinstance(body, SelfServiceFix):
        return body.fix_id
    if isinstance(body, ReleaseManifest):
        return f"release:{body.version}"
    return body.change_id


# --- technician proof ---------------------------------------------------------------------------


class TechnicianStatement(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a technician signs to start unattended work: this device, this nonce, this action, now."""

    nonce: Nonce
    device_id: Name
    action: Action
    document_id: DocumentId
    signed_at: Timestamp

    def __post_init__(self) -> None:
        _finite(self.signed_at)


class TechnicianProof(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A :class:`TechnicianStatement` in canonical bytes and the technician's signature."""

    body: Annotated[str, msgspec.Meta(max_length=limits.MAX_TEXT)]
    approval: Approval


# --- canonical bytes ------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder(order="sorted")

Canonical: TypeAlias = (Body | CredentialCert | RevocationList | RootRotationBody | TechnicianStatement
                        | RootInfo)


def canonical_bytes(value: Canonical) -> bytes:
    """The exact bytes that are signed: sorted-key compact JSON."""
    return _encoder.encode(value)


class NotCanonical(ValueError):
    """A signed text decodes but is not in the canonical form its signer must have produced."""


T = TypeVar("T")


def decode_canonical(text: str, kind: type[T]) -> T:
    """Decode ``text`` as ``kind`` and require it to be canonical.

    Raises ``msgspec.ValidationError``/``msgspec.DecodeError`` for bad input and
    :class:`NotCanonical` when re-encoding would give other bytes.
    """
    raw = text.encode()
    value = msgspec.json.decode(raw, type=kind)
    if _encoder.encode(value) != raw:
        raise NotCanonical("the signed text is not in canonical form (sorted keys, compact, no duplicates)")
    return value


def decode_body(kind: str, text: str) -> Body:
    """The body of a document of ``kind`` (see :func:`decode_canonical` for what it raises)."""
    body_type = BODY_TYPES.get(kind)
    if body_type is None:
        raise msgspec.ValidationError(f"unknown document kind {kind!r}")
    return decode_canonical(text, body_type)


def new_document(kind: DocumentKind, body: Body) -> SignedDocument:
    """A document with no approvals yet; refuses a body of another kind.

    The body goes through one decode first, so a whole number given for a float field (``per_seconds=3600``,
    ``minimum=0``) is written as the float a verifier decodes (``3600.0``) and the text stays canonical.
    """
    body_type = BODY_TYPES[kind]
    if not isinstance(body, body_type):
        raise TypeError(f"a {kind} document needs a {body_type.__name__} body")
    normalized = msgspec.json.decode(canonical_bytes(body), type=body_type)
    return SignedDocument(kind=kind, body=canonical_bytes(normalized).decode(), approvals=[])


# --- verdicts and policy ------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: allowed, or refused with a reason a person can act on."""

    allowed: bool
    reason: str
    #: The decoded body, when allowed.
    body: Body | None = None
    #: Credential ids whose signatures counted (approvers, or the technician).
    signers: tuple[str, ...] = ()
    #: Their holders, in the same order.
    holders: tuple[str, ...] = ()
    #: A technician passkey's signature counter (to remember for clone detection).
    counter: int | None = None

    @classmethod
    def refuse(cls, reason: str) -> Verdict:
        return cls(False, reason)


@dataclass(frozen=True)
class AuthorityPolicy:
    """The device's own rules for signed documents; nothing the server says changes them."""

    #: Approvals every document needs at least.
    min_approvals: int = 1
    #: Four-eyes (two distinct approvers) when a grant, task or fix names device groups …
    four_eyes_for_groups: bool = True
    #: … when a task or fix runs a script …
    four_eyes_for_scripts: bool = True
    #: … and always for these kinds.
    four_eyes_kinds: frozenset[str] = frozenset({"approver_set"})
    #: Kinds an automation credential may approve (none by default).
    automation_kinds: frozenset[str] = frozenset()
    #: Passkey approvals must carry the user-verified flag.
    require_user_verification: bool = True
    #: Longest grant (not_after - not_before) this device honours.
    max_grant_lifetime_s: float = 30 * 86400
    #: Longest validity a revocation list may claim.
    max_revocation_validity_s: float = 24 * 3600
    #: Kinds refused while the revocation list is missing, stale or invalid (fail closed).
    fresh_revocations_for: frozenset[str] = DOCUMENT_KINDS
    #: Only these approver credential ids count (from an applied ApproverSetChange); None = all.
    approver_set: frozenset[str] | None = None
    #: How old a technician's statement may be, and how far ahead of our clock.
    proof_max_age_s: float = 120.0
    clock_skew_s: float = 30.0

    def __post_init__(self) -> None:
        _finite(self.max_grant_lifetime_s, self.max_revocation_validity_s, self.proof_max_age_s, self.clock_skew_s)
        if self.min_approvals < 1:
            raise ValueError("min_approvals must be at least 1")


def required_approvals(kind: str, body: Body, policy: AuthorityPolicy) -> int:
    """How many distinct approvers ``body`` needs on this device."""
    needed = policy.min_approvals
    groups = getattr(body, "groups", [])
    script = getattr(body, "script_sha256", None)
    if (kind in policy.four_eyes_kinds or (policy.four_eyes_for_groups and groups)
            or (policy.four_eyes_for_scripts and script is not None)):
        needed = max(needed, 2)
    return needed


def users_of(body: Body) -> tuple[frozenset[str], frozenset[str]]:
    """Technician credential ids and casefolded holder names a body lets act (who may not approve it)."""
    if isinstance(body, UnattendedGrant | TaskAuthorization):
        return frozenset(body.technicians), frozenset(n.casefold() for n in body.technician_names)
    return frozenset(), frozenset()


# --- pure helpers the agent applies after the chain verified ---------------------------------


def occurrence_key(document_id: str, scheduled_at: float | None) -> str:
    """The replay-ledger key of one run: the document and the occurrence (``once`` when unscheduled)."""
    if scheduled_at is None:
        return f"{document_id}@once"
    _finite(scheduled_at)
    return f"{document_id}@{int(scheduled_at)}"


def check_occurrence(task: TaskAuthorization, *, scheduled_at: float | None, now: float, tz: tzinfo,
                     ledger: Container[str], max_lateness_s: float = 6 * 3600) -> Verdict:
    """May this occurrence of ``task`` run now? Each occurrence at most once, and only a real one.

    ``scheduled_at`` must be an occurrence of the signed schedule (on the device's clock in
    ``tz``) that has come, not more than ``max_lateness_s`` ago, inside the task's validity.
    """
    from cronsim import CronSim, CronSimError  # only scheduled tasks pay for the import

    if not (math.isfinite(now) and (scheduled_at is None or math.isfinite(scheduled_at))):
        return Verdict.refuse("times must be finite numbers")
    if not task.not_before <= now < task.not_after:
        return Verdict.refuse("outside the task's validity")
    key = occurrence_key(task.task_id, scheduled_at)
    if task.schedule is None:
        if scheduled_at is not None:
            return Verdict.refuse("the task has no schedule, so no scheduled occurrence")
    else:
        if scheduled_at is None:
            return Verdict.refuse("a scheduled task runs only at an occurrence of its schedule")
        if not task.not_before <= scheduled_at < task.not_after:
            return Verdict.refuse("the occurrence lies outside the task's validity")
        if scheduled_at > now:
            return Verdict.refuse("the occurrence has not come yet")
        if now - scheduled_at > max_lateness_s:
            return Verdict.refuse("the occurrence is too old to run now")
        try:
            start = datetime.fromtimestamp(math.floor(scheduled_at) - 1, tz)
            upcoming = next(iter(CronSim(task.schedule, start)), None)
        except (CronSimError, ValueError, OverflowError, OSError):
            return Verdict.refuse("the task's schedule cannot be evaluated")
        if upcoming is None or upcoming.timestamp() != scheduled_at:
            return Verdict.refuse("not an occurrence of the signed schedule")
    if key in ledger:
        return Verdict.refuse(f"already run ({key})")
    return Verdict(True, f"occurrence {key} may run", body=task)


def check_fix_params(fix: SelfServiceFix, params: dict[str, Any]) -> Verdict:
    """Are ``params`` within the fix's signed limits? Unknown parameters are refused."""
    unknown = sorted(set(params) - set(fix.params))
    if unknown:
        return Verdict.refuse(f"unknown parameters: {', '.join(unknown)}")
    for name, limit in sorted(fix.params.items()):
        if name not in params:
            if limit.required:
                return Verdict.refuse(f"parameter {name!r} is required")
            continue
        problem = _param_problem(limit, params[name])
        if problem:
            return Verdict.refuse(f"parameter {name!r}: {problem}")
    return Verdict(True, "parameters within the fix's limits", body=fix)


def _param_problem(limit: ParamLimit, value: Any) -> str:
    expected: tuple[type, ...] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}[limit.type]
    if isinstance(value, bool) != (limit.type == "bool") or not isinstance(value, expected):
        return f"must be of type {limit.type}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be finite"
    if limit.choices is not None and value not in limit.choices:
        return "is not one of the allowed choices"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if limit.minimum is not None and value < limit.minimum:
            return f"must be at least {limit.minimum}"
        if limit.maximum is not None and value > limit.maximum:
            return f"must be at most {limit.maximum}"
    if isinstance(value, str) and limit.max_length is not None and len(value) > limit.max_length:
        return f"must be at most {limit.max_length} characters"
    return ""


def check_run_budget(fix: SelfServiceFix, past_runs: list[float], now: float) -> Verdict:
    """Is there budget left for one more run now, given the start times of earlier runs?"""
    if not math.isfinite(now):
        return Verdict.refuse("time must be a finite number")
    if not fix.not_before <= now < fix.not_after:
        return Verdict.refuse("outside the fix's validity")
    recent = [t for t in past_runs if now - fix.budget.per_seconds < t <= now]
    if len(recent) >= fix.budget.max_runs:
        return Verdict.refuse(f"run budget used up ({fix.budget.max_runs} per {fix.budget.per_seconds:g} s)")
    return Verdict(True, "within the run budget", body=fix)


def body_sha256(text: str) -> str:
    """SHA-256 hex of a body's canonical text (what ``helpline approve`` shows, and revocations may name)."""
    return hashlib.sha256(text.encode()).hexdigest()

