"""Passkeys (WebAuthn, through python-fido2) for technicians and approvers.

A logged-in user registers a passkey from the console; the server keeps its public key only.
The key then serves three purposes:

* **login second factor** instead of the TOTP code (:mod:`.second_factor`, plugged into the
  login service);
* **certification**: the administrator certifies it on the offline workstation with
  ``helpline trust certify --cose-key FILE --fingerprint HEX`` after the holder has read the
  fingerprint their own console showed at registration; the server only carries the key
  (``GET /api/v1/passkeys/{id}/public-key``);
* **signing** in the browser: approvals of documents and technician proofs (:mod:`.assertion`
  re-packs the browser's assertion as protocol.authority's Approval / TechnicianProof). Devices
  verify those themselves; the server never holds anything that could sign.

Layout: :mod:`.relying_party` (the console as python-fido2's Fido2Server), :mod:`.registration`,
:mod:`.verify` (one use + the signature counter), :mod:`.repository` (SQL), :mod:`.api` (routes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..accounts import LOGIN_SERVICE
from ..api import add_routes
from .api import routes
from .relying_party import RelyingParty
from .second_factor import PasskeyFactor

if TYPE_CHECKING:
    from ..app import HelplineServer


def setup(server: HelplineServer) -> None:
    app = server.console_app

    def relying_party() -> RelyingParty:
        # The console's port is only known once it listens (tests bind port 0).
        return RelyingParty.for_console(server.config.public_host, server.console_port, server.config.allowed_origins)

    add_routes(app, routes(relying_party))

    async def on_startup(app: web.Application) -> None:
        # accounts.setup runs first (see HelplineServer._compose) and builds the login service.
        app[LOGIN_SERVICE].second_factor = PasskeyFactor(server.db, relying_party)

    app.on_startup.append(on_startup)
