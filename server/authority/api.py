"""Authority REST API: relay what the offline root and the approvers made; never make any of it.

- ``GET/POST /api/v1/authority``: the root chain, certificates and revocation lists (uploading needs
  ADMINISTER on every group: ``helpline trust publish`` sends what ``helpline trust …`` wrote).
- ``/api/v1/documents``: signed documents — drafts with no approval yet, approvals appended one by
  one (``helpline approve sign``), withdrawal. A document spans device groups (its groups plus the
  groups of its devices; releases and approver sets concern every group, ``*``), so these routes
  declare no scope and the handlers check the right on each group it touches; whoever holds neither
  MANAGE_GRANTS nor APPROVE_GRANTS on all of them gets the 404 of a missing document.
- ``GET /api/v1/devices/{device_id}/authority``: what the device last reported it holds and refused.

Devices decide: nothing the server says here makes a document valid on a device.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from aiohttp import web

from protocol.authority import Approval, RootInfo, RootRotation, SignedCert, SignedDocument, SignedRevocationList
from protocol.authority_messages import MAX_CERTS
from protocol.legacy import LegacyHandover

from .. import api
from ..api import scopes
from ..api.context import right_names
from ..auth.rights import ANY_GROUP, Principal, Right
from ..errors import ApiError
from ..store import Database, Row
from . import repository, views

if TYPE_CHECKING:
    from ..app import HelplineServer

#: A certificate is about a kilobyte; a full upload stays under the console's 2 MiB request limit.
MAX_UPLOAD = 2 * 1024 * 1024 - 1024


class AuthorityUpload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What ``helpline trust`` wrote: root.json, rotation.json, certificates, a revocation list (any subset)."""

    root: RootInfo | None = None
    replace_root: Annotated[bool, msgspec.Meta(description=(
        "Relay another root although one is relayed already (a new installation's root; agents installed with "
        "the old root refuse it). Without it, a new root is accepted only through a rotation."))] = False
    rotations: Annotated[list[RootRotation], msgspec.Meta(max_length=16)] = []
    certs: Annotated[list[SignedCert], msgspec.Meta(max_length=MAX_CERTS)] = []
    revocations: SignedRevocationList | None = None
    handover: Annotated[LegacyHandover, msgspec.Meta(description=(
        "The old grant key's one-time hand-over to the root (`helpline trust adopt`), for agents enrolled "
        "before the org root existed."))] | None = None


class DocumentListQuery(msgspec.Struct):
    status: Annotated[Literal["pending", "approved", "withdrawn"], msgspec.Meta(
        description="pending = not (yet) verifiable as approved from the server's view")] | None = None


async def _device_groups(db: Database, device_ids: Collection[str]) -> dict[str, str]:
    if not device_ids:
        return {}
    marks = ", ".join("?" for _ in device_ids)
    rows = await db.fetchall(f"SELECT id, group_name FROM devices WHERE id IN ({marks})",  # noqa: S608 - marks only
                             sorted(device_ids))
    return {r["id"]: r["group_name"] for r in rows}


async def _groups_of(db: Database, devices: list[str], groups: list[str]) -> set[str]:
    """The device groups a document touches (``*`` when it names none: it concerns every device)."""
    if not devices and not groups:
        return {ANY_GROUP}
    found = await _device_groups(db, set(devices))
    return set(groups) | set(found.values())


def _sees(caller: Principal, groups: set[str]) -> bool:
    return all(caller.can(Right.MANAGE_GRANTS, g) or caller.can(Right.APPROVE_GRANTS, g) for g in groups)


def _require_on_all(caller: Principal, right: Right, groups: set[str]) -> None:
    for group in sorted(groups):
        if not caller.can(right, group):
            raise ApiError(403, "forbidden", f"requires right {right_names(right)} on group {group!r}")


async def _visible(request: web.Request) -> tuple[Principal, Row, set[str]]:
    caller = api.principal(request)
    db = api.db(request)
    row = await repository.get_document(db, request.match_info["document_id"])
    if row is None:
        raise ApiError.not_found("document")
    groups = await _groups_of(db, *repository.listed(row))
    if not _sees(caller, groups):
        raise ApiError.not_found("document")
    return caller, row, groups


async def _view(db: Database, row: Row) -> dict[str, Any]:
    chain = await repository.chain(db)
    return views.document_view(row, root=chain.current, certs=await repository.certs(db),
                               revocations=await repository.latest_revocations(db))


async def get_authority(request: web.Request) -> web.Response:
    """The root chain, certificates and revocations the server relays"""
    db = api.db(request)
    chain = await repository.chain(db)
    certs = await repository.certs(db)
    return api.json(views.chain_view(chain) | {
        "certs": [views.cert_view(c, chain.current) for c in certs],
        "revocations": views.revocations_view(await repository.latest_revocations(db), time.time()),
        "handover": views.handover_view(await repository.latest_handover(db))})


async def upload_authority(request: web.Request) -> web.Response:
    """Relay the root, rotations, certificates or a revocation list"""
    body = api.body(request, AuthorityUpload)
    actor = f"user:{api.principal(request).username}"
    db = api.db(request)
    result: dict[str, Any] = {"root": None, "rotations": [], "certs": {"added": [], "known": []},
                              "revocations": None, "handover": None}
    async with db.transaction() as tx:
        if body.root is not None:
            result["root"] = await repository.put_root(tx, body.root, replace=body.replace_root, actor=actor)
        for rotation in body.rotations:
            result["rotations"].append(await repository.put_rotation(tx, rotation, actor=actor, now=time.time()))
        for signed in body.certs:
            cert, new = await repository.put_cert(tx, signed, actor=actor)
            result["certs"]["added" if new else "known"].append(cert.credential_id)
        if body.revocations is not None:
            listed, new = await repository.put_revocations(tx, body.revocations, actor=actor)
            result["revocations"] = {"sequence": listed.sequence, "expires_at": listed.expires_at,
                                     "added": new}
        if body.handover is not None:
            result["handover"] = await repository.put_handover(tx, body.handover, actor=actor)
    chain = await repository.chain(db)
    return api.json(result | views.chain_view(chain))


async def create_document(request: web.Request) -> web.Response:
    """Store a signed document (a draft may have no approval yet)"""
    caller = api.principal(request)
    document = api.body(request, SignedDocument)
    db = api.db(request)
    devices, groups = repository.scope_of(repository.decode(document))
    found = await _device_groups(db, set(devices))
    for device in devices:
        group = found.get(device)
        if group is None or caller.rights_on(group) is Right.NONE:
            raise ApiError(404, "not_found", f"no device {device}")
    _require_on_all(caller, Right.MANAGE_GRANTS, await _groups_of(db, devices, groups))
    row = await repository.create_document(db, document, actor=f"user:{caller.username}")
    return api.json(await _view(db, row), status=201)


async def list_documents(request: web.Request) -> web.Response:
    """List signed documents"""
    caller = api.principal(request)
    wanted = api.query(request, DocumentListQuery).status
    db = api.db(request)
    out = []
    for row in await repository.list_documents(db):
        if not _sees(caller, await _groups_of(db, *repository.listed(row))):
            continue
        view = await _view(db, row)
        if wanted is None or view["status"] == wanted:
            out.append(view)
    return api.json({"documents": out})


async def get_document(request: web.Request) -> web.Response:
    """One signed document, decoded, with its hash and approvals"""
    _caller, row, _groups = await _visible(request)
    return api.json(await _view(api.db(request), row))


async def approve_document(request: web.Request) -> web.Response:
    """Append an approval (made by ``helpline approve sign`` or a passkey)"""
    caller, row, groups = await _visible(request)
    _require_on_all(caller, Right.APPROVE_GRANTS, groups)
    approval = api.body(request, Approval)
    db = api.db(request)
    fresh = await repository.add_approval(db, row["document_id"], approval, actor=f"user:{caller.username}")
    return api.json(await _view(db, fresh))


async def withdraw_document(request: web.Request) -> web.Response:
    """Withdraw a document (agents drop it; revoke it in a revocation list to be sure)"""
    caller, row, groups = await _visible(request)
    _require_on_all(caller, Right.MANAGE_GRANTS, groups)
    db = api.db(request)
    fresh = await repository.withdraw(db, row["document_id"], actor=f"user:{caller.username}")
    return api.json(await _view(db, fresh))


async def device_authority(request: web.Request) -> web.Response:
    """What the device last reported about the authority it holds"""
    row = await repository.device_status(api.db(request), request.match_info["device_id"])
    if row is None:
        return api.json({"device_id": request.match_info["device_id"], "reported": False})
    return api.json({"device_id": row["device_id"], "reported": True, "root_fingerprint": row["root_fingerprint"],
                     "unattended_ok": bool(row["unattended_ok"]), "problem": row["problem"],
                     "revocation_sequence": row["revocation_sequence"], "accepted": json.loads(row["accepted"]),
                     "refused": json.loads(row["refused"]), "reported_at": row["reported_at"]})


_READ = api.AnyOf(Right.MANAGE_GRANTS, Right.APPROVE_GRANTS)
_NO_DOC = "No such document (or one of a group where the caller neither manages nor approves grants)"
_ON_ALL = " on every device group the document touches (`*` for one that names none)"


def routes() -> list[api.Route]:
    return [
        api.Route("GET", "/api/v1/authority", get_authority, api.AnyOf(Right.MANAGE_GRANTS, Right.APPROVE_GRANTS,
                                                                       Right.ADMINISTER),
                  response=dict[str, Any], description="Each certificate says whether the root relayed now signed "
                                                       "it; devices check against the root they were installed with."),
        api.Route("POST", "/api/v1/authority", upload_authority, Right.ADMINISTER, api.GLOBAL, body=AuthorityUpload,
                  response=dict[str, Any], max_body=MAX_UPLOAD,
                  errors={409: "Another root is relayed already (`root_exists`), a rotation does not hand over "
                               "from it, or a hand-over does not verify or names another root (`handover_refused`)"},
                  description="Stores what `helpline trust` made on an administrator's workstation: root.json, "
                              "rotation.json, certificates, revocation lists, the old grant key's hand-over. "
                              "Audited; pushed to every agent."),
        api.Route("POST", "/api/v1/documents", create_document, Right.MANAGE_GRANTS, body=SignedDocument,
                  response=dict[str, Any], status=201, errors={404: "Unknown device", 409: "The id is taken"},
                  description=f"Needs manage_grants{_ON_ALL}. A draft may carry no approval yet; the body must be "
                              "canonical. Audited; pushed to the agents it concerns once approved by someone."),
        api.Route("GET", "/api/v1/documents", list_documents, _READ, query=DocumentListQuery,
                  response=dict[str, Any],
                  description="Only documents on whose every group the caller manages or approves grants."),
        api.Route("GET", "/api/v1/documents/{document_id}", get_document, _READ, response=dict[str, Any],
                  errors={404: _NO_DOC},
                  description="The decoded body, the SHA-256 of its signed text, its approvals (each checked from "
                              "the server's view: a convenience, devices decide) and the raw signed document."),
        api.Route("POST", "/api/v1/documents/{document_id}/approvals", approve_document, Right.APPROVE_GRANTS,
                  body=Approval, response=dict[str, Any], errors={404: _NO_DOC, 409: "Withdrawn"},
                  description=f"Needs approve_grants{_ON_ALL}. Appends the approval as given (replacing one by the "
                              "same credential). Audited; pushed to the agents."),
        api.Route("POST", "/api/v1/documents/{document_id}/withdraw", withdraw_document, Right.MANAGE_GRANTS,
                  response=dict[str, Any], errors={404: _NO_DOC},
                  description=f"Needs manage_grants{_ON_ALL}. Agents forget it; only a revocation list guarantees "
                              "that a device refuses it (a compromised server could keep relaying it)."),
        api.Route("GET", "/api/v1/devices/{device_id}/authority", device_authority, Right.VIEW_INVENTORY,
                  scopes.DEVICE, response=dict[str, Any]),
    ]


def setup(server: HelplineServer) -> None:
    api.add_routes(server.console_app, routes())
