"""The technician's side of support codes (console port), every route declared with its right.

Creating a code needs REMOTE_VIEW on the group the body names (the route declares REMOTE_VIEW
on "some group"; the handler checks it on that group before anything else). A code and the
client that redeemed it belong to the technician who created the code: only they (or an
administrator) may revoke it or start its session; a session in control mode needs
REMOTE_CONTROL too, as for any device.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from aiohttp import web

from certs.pinning import fingerprint_of_pem
from common import addresses
from protocol.session import Mode
from server import api, audit
from server.auth.rights import Principal, Right
from server.bus import node as bus_node
from server.errors import ApiError
from server.sessions import SessionDriver
from server.store import Row

from . import codes, repository
from .settings import SupportCodeSettings

if TYPE_CHECKING:
    from server.app import HelplineServer

#: Listings show codes and clients of the last day.
LISTED_S = 24 * 3600.0

GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class NewSupportCode(msgspec.Struct, forbid_unknown_fields=True):
    group: GroupName
    reason: Annotated[str, msgspec.Meta(max_length=256, description="Why (shown in the console and audit).")] = ""
    ttl_min: Annotated[int, msgspec.Meta(ge=1, le=30, description="Minutes until it expires.")] | None = None


class NewSupportSession(msgspec.Struct, forbid_unknown_fields=True):
    mode: Mode = "view"
    reason: Annotated[str, msgspec.Meta(max_length=256, description="Shown to the person at the machine.")] = ""


async def _code_group(db: Any, code_id: str) -> str | None:
    return await repository.code_group(db, code_id)


async def _client_group(db: Any, client_id: str) -> str | None:
    return await repository.client_group(db, client_id)


CODE = api.Scope("support code", "code_id", _code_group)
CLIENT = api.Scope("support client", "client_id", _client_group)


def code_state(row: Row, now: float) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["used_at"] is not None:
        return "used"
    return "expired" if row["expires_at"] <= now else "live"


def _code_view(row: Row, now: float) -> dict[str, Any]:
    return {"id": row["id"], "group": row["group_name"], "technician": row["technician_user"],
            "reason": row["reason"], "created_at": row["created_at"], "expires_at": row["expires_at"],
            "used_at": row["used_at"], "used_from": row["used_from"], "revoked_at": row["revoked_at"],
            "revoked_by": row["revoked_by"], "client_id": row["client_id"], "state": code_state(row, now)}


def _own(caller: Principal, technician: str) -> None:
    if not caller.is_admin and caller.username != technician:
        raise ApiError(403, "forbidden", "this support code belongs to another technician")


def routes(server: HelplineServer, sessions: SessionDriver, settings: SupportCodeSettings,
           pepper: bytes) -> list[api.Route]:
    creating = asyncio.Lock()  # count-then-insert of live codes, on this node (the database lock: all nodes)

    async def create(request: web.Request) -> web.Response:
        """Create a support code (shown once)"""
        body = api.body(request, NewSupportCode)
        caller = api.principal(request)
        if not caller.can(Right.REMOTE_VIEW, body.group):
            raise ApiError(403, "forbidden", f"requires right remote_view on group {body.group!r}")
        db = api.db(request)
        if await db.fetchone("SELECT name FROM device_groups WHERE name = ?", (body.group,)) is None:
            raise ApiError.not_found("group")
        ttl_min = min(body.ttl_min or settings.default_ttl_min, settings.max_ttl_min)
        async with creating, db.transaction() as tx:
            await repository.lock_creation(tx)  # max_live holds over every node sharing the database
            now = time.time()
            if await repository.live_count(tx, now) >= settings.max_live:
                raise ApiError(409, "too_many_live_codes",
                               f"{settings.max_live} support codes are live; revoke one or wait for one to expire")
            for _ in range(8):
                code = codes.new_code(settings.digits)
                digest = codes.code_hash(pepper, code)
                if not await repository.hash_taken(tx, digest):
                    break
            else:
                raise ApiError(503, "no_code", "could not draw an unused code")
            code_id = "sc-" + secrets.token_hex(8)
            expires_at = now + ttl_min * 60
            await repository.insert_code(tx, code_id=code_id, digest=digest, group=body.group,
                                         technician=caller.username, reason=body.reason, created_at=now,
                                         expires_at=expires_at)
            await audit.append_in(tx, f"user:{caller.username}", "support_code.created", code_id,
                                  {"group": body.group, "reason": body.reason, "expires_at": expires_at})
        return api.json({"id": code_id, "code": codes.grouped(code), "group": body.group, "expires_at": expires_at,
                         "ttl_min": ttl_min, "technician": caller.username,
                         "bundle_url": "/api/v1/support-codes/bundle"}, status=201)

    async def listing(request: web.Request) -> web.Response:
        """Support codes and support clients of the last day (never the codes themselves)"""
        caller, now = api.principal(request), time.time()
        db = api.db(request)
        allowed = caller.groups_with(Right.REMOTE_VIEW)
        groups = None if allowed is None else sorted(allowed)  # filtered in SQL: the limit counts only these
        code_rows = await repository.recent_codes(db, now - LISTED_S, groups)
        client_rows = await repository.recent_clients(db, now - LISTED_S, groups)
        online = set(server.connections.device_ids())
        # With other nodes a client may wait on any of them (its session is routed there): not gone yet is enough.
        elsewhere = server.bus is not None
        clients = [{"id": r["id"], "kind": r["kind"], "group": r["group_name"], "technician": r["technician_user"],
                    "hostname": r["hostname"], "user": r["os_user"], "address": r["address"],
                    "connected_at": r["connected_at"], "ended_at": r["ended_at"], "session_id": r["session_id"],
                    "session_state": r["session_state"],
                    "waiting": (r["id"] in online or (elsewhere and r["ended_at"] is None)) and not r["session_id"]}
                   for r in client_rows if allowed is None or r["group_name"] in allowed]
        return api.json({"codes": [_code_view(r, now) for r in code_rows if allowed is None or
                                   r["group_name"] in allowed],
                         "clients": clients, "limits": {"max_live": settings.max_live,
                                                        "max_ttl_min": settings.max_ttl_min,
                                                        "default_ttl_min": settings.default_ttl_min}})

    async def revoke(request: web.Request) -> web.Response:
        """Revoke a live support code"""
        caller, db = api.principal(request), api.db(request)
        row = await repository.get_code(db, request.match_info["code_id"])
        if row is None:
            raise ApiError.not_found("support code")
        _own(caller, row["technician_user"])
        if not await repository.revoke(db, row["id"], by=caller.username, now=time.time()):
            raise ApiError(409, "not_live", f"the code is {code_state(row, time.time())}")
        await audit.append(db, f"user:{caller.username}", "support_code.revoked", row["id"],
                           {"group": row["group_name"]})
        again = await repository.get_code(db, row["id"])
        assert again is not None
        return api.json(_code_view(again, time.time()))

    async def bundle(request: web.Request) -> web.Response:
        """The support client's configuration bundle (server address, pinned CA fingerprint)"""
        pem = await asyncio.to_thread(server.pki.ca_pem.read_bytes)
        url = addresses.url("https", server.config.public_host, server.console_port)  # [::1] bracketed
        text = ("# Helpline support client bundle: helpline support --bundle helpline-support.toml CODE\n"
                f'server = "{url}"\n'
                f'ca_sha256 = "{fingerprint_of_pem(pem)}"\n')
        return web.Response(text=text, content_type="application/toml", headers={
            "Content-Disposition": 'attachment; filename="helpline-support.toml"'})

    async def start_session(request: web.Request) -> web.Response:
        """Start the attended session with a waiting support client"""
        body = api.body(request, NewSupportSession)
        if body.mode == "control":
            api.require_also(request, Right.REMOTE_CONTROL)
        caller, db = api.principal(request), api.db(request)
        client = await repository.get_client(db, request.match_info["client_id"])
        if client is None:
            raise ApiError.not_found("support client")
        _own(caller, client["technician_user"])
        if not await repository.set_client_session(db, client["id"], "pending"):
            raise ApiError(409, "already_used", "a support client gets one session")
        try:  # here, or on the node the client is connected to (the same routing as any session)
            view = await bus_node.start_session(server.bus, sessions, caller, device_id=client["id"],
                                       group=client["group_name"], mode=body.mode, reason=body.reason, kind="support")
        except BaseException:
            await db.execute("UPDATE support_clients SET session_id = '' WHERE id = ?", (client["id"],))
            raise
        await db.execute("UPDATE support_clients SET session_id = ? WHERE id = ?", (view["session_id"], client["id"]))
        return api.json(view, status=201)

    view = Right.REMOTE_VIEW
    return [
        api.Route("POST", "/api/v1/support-codes", create, view, None, body=NewSupportCode, status=201,
                  summary="Create a support code (shown once) for a device that is not enrolled",
                  description="Needs remote_view on `group`. The code is returned once, grouped for reading "
                              "aloud; the server keeps only its HMAC.",
                  errors={404: "No such group", 409: "Too many live codes"}),
        api.Route("GET", "/api/v1/support-codes", listing, view, None,
                  summary="Support codes and support clients (without the codes)"),
        api.Route("GET", "/api/v1/support-codes/bundle", bundle, view, None,
                  summary="Support client bundle (TOML: server address, pinned CA SHA-256)",
                  content={"application/toml": {"schema": {"type": "string"}}}),
        api.Route("POST", "/api/v1/support-codes/{code_id}/revoke", revoke, view, CODE,
                  summary="Revoke a live support code", errors={409: "The code is not live"}),
        api.Route("POST", "/api/v1/support-clients/{client_id}/sessions", start_session, view, CLIENT,
                  body=NewSupportSession, status=201, summary="Start the attended session with a support client",
                  errors={409: "The client is gone or already had its session"}),
    ]
