"""The console as a WebAuthn relying party: python-fido2's :class:`~fido2.server.Fido2Server`, bound
to the console's public host name and its exact origins.

The relying-party id is the console's host name (``ServerConfig.public_host``): a passkey works
only on that site, and a device later checks the SHA-256 of that id in every assertion. Only
ES256 and EdDSA are offered, the algorithms a device accepts (:data:`certs.authority.COSE_ALGORITHMS`);
ES256 first, since every authenticator has it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fido2.rpid import verify_rp_id
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationConveyancePreference,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
)

from certs.authority import COSE_ALGORITHMS

#: COSE algorithm ids offered to authenticators, preferred first: ES256 (-7), then EdDSA (-8).
ALGORITHMS: tuple[int, ...] = tuple(sorted(COSE_ALGORITHMS, reverse=True))

#: What a certified passkey's origins may look like (:class:`protocol.authority.PasskeyKey`).
_ORIGIN = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")

RP_NAME = "Helpline"


def origin_of(host: str, port: int) -> str:
    """The origin a browser sends for ``https://host:port`` (no port when it is the default)."""
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


@dataclass(frozen=True)
class RelyingParty:
    """The console's relying-party id and the origins assertions may come from."""

    rp_id: str
    origins: tuple[str, ...]

    @classmethod
    def for_console(cls, public_host: str, console_port: int, extra_origins: Iterable[str] = ()) -> RelyingParty:
        """The console's own origin, plus configured extra origins that may use this rp id."""
        own = origin_of(public_host, console_port)
        extra = [o for o in extra_origins if o != own and _ORIGIN.match(o) and verify_rp_id(public_host, o)]
        return cls(public_host, (own, *sorted(set(extra))))

    def allows(self, origin: str) -> bool:
        return origin in self.origins

    def fido2(self, origins: Sequence[str] | None = None) -> Fido2Server:
        """A Fido2Server for this relying party, accepting ``origins`` (default: the console's)."""
        allowed = frozenset(self.origins if origins is None else origins)
        server = Fido2Server(PublicKeyCredentialRpEntity(name=RP_NAME, id=self.rp_id),
                             attestation=AttestationConveyancePreference.NONE,
                             verify_origin=allowed.__contains__)
        server.allowed_algorithms = [PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
                                     for alg in ALGORITHMS]
        return server


def jsonable(value: Any) -> Any:
    """python-fido2's option objects as plain JSON data (bytes become base64url, as WebAuthn JSON has them)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        from fido2.utils import websafe_encode

        return websafe_encode(value)
    if isinstance(value, Enum):
        return value.value
    return value
