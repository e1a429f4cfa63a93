"""Routes for business services, declared relations, a device's relations and impact walks.

Reading needs ``view_inventory`` (on the device's group for device routes, on some group for the
rest; devices of other groups are counted, never named). Declaring services and relations changes
the fleet-wide model, so it needs ``administer`` on every group (``*``) and is audited.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from server import api, audit
from server.api import scopes
from server.auth.rights import Right

from . import relations

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=1000)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ServiceBody(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Text = ""
    owner: Annotated[str, msgspec.Meta(max_length=200)] = ""


class NodeRef(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["device", "service"]
    id: Id


class RelationBody(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["runs", "depends_on"]
    source: NodeRef
    target: NodeRef


def _groups(request: web.Request) -> set[str] | None:
    return api.principal(request).groups_with(Right.VIEW_INVENTORY)


async def list_services(request: web.Request) -> web.Response:
    """Business services"""
    rows = await api.db(request).fetchall(
        "SELECT s.*, (SELECT COUNT(*) FROM cmdb_relations r WHERE (r.source_type = 'service' AND r.source_id = s.id)"
        " OR (r.target_type = 'service' AND r.target_id = s.id)) AS relations FROM cmdb_services s"
        " ORDER BY LOWER(s.name)")
    return api.json({"items": [{"id": r["id"], "name": r["name"], "description": r["description"],
                                "owner": r["owner"], "relations": int(r["relations"]),
                                "created_at": r["created_at"], "created_by": r["created_by"]} for r in rows]})


async def create_service(request: web.Request) -> web.Response:
    """Create a business service"""
    body = api.body(request, ServiceBody)
    actor = api.principal(request).username
    service_id = relations.new_id("svc")
    async with api.db(request).transaction() as tx:
        if await tx.fetchone("SELECT id FROM cmdb_services WHERE name = ?", (body.name,)):
            raise api.ApiError(409, "exists", f"a service named {body.name!r} exists")
        await tx.execute("INSERT INTO cmdb_services (id, name, description, owner, created_at, created_by)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (service_id, body.name, body.description, body.owner,
                                                        time.time(), actor))
        await audit.append_in(tx, actor, "cmdb.service.create", service_id, {"name": body.name})
    return api.json({"id": service_id, "name": body.name}, status=201)


async def delete_service(request: web.Request) -> web.Response:
    """Delete a business service and its relations"""
    service_id = request.match_info["service_id"]
    actor = api.principal(request).username
    async with api.db(request).transaction() as tx:
        row = await tx.fetchone("SELECT name FROM cmdb_services WHERE id = ?", (service_id,))
        if row is None:
            raise api.ApiError.not_found("service")
        await relations.remove_node(tx, ("service", service_id))
        await tx.execute("DELETE FROM cmdb_services WHERE id = ?", (service_id,))
        await audit.append_in(tx, actor, "cmdb.service.delete", service_id, {"name": row["name"]})
    return api.json({"deleted": service_id})


async def service_impact(request: web.Request) -> web.Response:
    """What breaks if this service goes down"""
    service_id = request.match_info["service_id"]
    db = api.db(request)
    if await db.fetchone("SELECT id FROM cmdb_services WHERE id = ?", (service_id,)) is None:
        raise api.ApiError.not_found("service")
    return api.json(await relations.impact(db, ("service", service_id), _groups(request)))


async def list_relations(request: web.Request) -> web.Response:
    """Declared relations"""
    groups = _groups(request)
    db = api.db(request)
    rows = await db.fetchall("SELECT r.*, sd.group_name AS source_group, td.group_name AS target_group"
                             " FROM cmdb_relations r"
                             " LEFT JOIN devices sd ON r.source_type = 'device' AND sd.id = r.source_id"
                             " LEFT JOIN devices td ON r.target_type = 'device' AND td.id = r.target_id"
                             " ORDER BY r.created_at, r.id LIMIT 5000")

    def visible(r: dict[str, Any]) -> bool:
        return groups is None or all(g is None or g in groups for g in (r["source_group"], r["target_group"]))

    return api.json({"items": [relations.describe(r) for r in rows if visible(r)]})


async def create_relation(request: web.Request) -> web.Response:
    """Declare a relation"""
    body = api.body(request, RelationBody)
    actor = api.principal(request).username
    source, target = (body.source.type, body.source.id), (body.target.type, body.target.id)
    async with api.db(request).transaction() as tx:
        try:
            rel_id = await relations.add_relation(tx, body.kind, source, target, actor, time.time())
        except relations.RelationError as exc:
            raise api.ApiError.invalid(str(exc)) from exc
        await audit.append_in(tx, actor, "cmdb.relation.create", rel_id,
                              {"kind": body.kind, "source": list(source), "target": list(target)})
    return api.json({"id": rel_id}, status=201)


async def delete_relation(request: web.Request) -> web.Response:
    """Remove a declared relation"""
    rel_id = request.match_info["relation_id"]
    actor = api.principal(request).username
    async with api.db(request).transaction() as tx:
        if await tx.fetchone("SELECT id FROM cmdb_relations WHERE id = ?", (rel_id,)) is None:
            raise api.ApiError.not_found("relation")
        await tx.execute("DELETE FROM cmdb_relations WHERE id = ?", (rel_id,))
        await audit.append_in(tx, actor, "cmdb.relation.delete", rel_id)
    return api.json({"deleted": rel_id})


async def device_relations(request: web.Request) -> web.Response:
    """A device's relations"""
    return api.json(await relations.device_relations(api.db(request), request.match_info["device_id"]))


async def device_primary_user(request: web.Request) -> web.Response:
    """A device's primary user"""
    device_id = request.match_info["device_id"]
    row = await relations.primary_user(api.db(request), device_id)
    return api.json({"device_id": device_id, "primary_user": row["username"] if row else None,
                     "logins": row["observations"] if row else 0, "last_seen": row["last_seen"] if row else None})


async def device_impact(request: web.Request) -> web.Response:
    """What breaks if this device goes down"""
    return api.json(await relations.impact(api.db(request), ("device", request.match_info["device_id"]),
                                           _groups(request)))


_ADMIN_NOTE = "Needs administer on every group (`*`); audited."
_IMPACT = ("`breaks`: what fails if the item goes down (devices take the services they run; a service takes "
           "what depends on it), transitively; `needs`: what the item itself depends on. Cycles are reported in "
           "`cycles` and end the walk; devices the caller may not see are counted in `*_hidden`.")


def routes() -> list[api.Route]:
    view, admin = Right.VIEW_INVENTORY, Right.ADMINISTER
    return [
        api.Route("GET", "/api/v1/cmdb/services", list_services, view, response=dict[str, Any]),
        api.Route("POST", "/api/v1/cmdb/services", create_service, admin, api.GLOBAL, body=ServiceBody,
                  response=dict[str, Any], status=201, errors={409: "A service of that name exists"},
                  description=_ADMIN_NOTE),
        api.Route("DELETE", "/api/v1/cmdb/services/{service_id}", delete_service, admin, api.GLOBAL,
                  response=dict[str, Any], description=_ADMIN_NOTE),
        api.Route("GET", "/api/v1/cmdb/services/{service_id}/impact", service_impact, view,
                  response=dict[str, Any], description=_IMPACT),
        api.Route("GET", "/api/v1/cmdb/relations", list_relations, view, response=dict[str, Any],
                  description="Declared relations (`runs`, `depends_on`) whose devices the caller may see."),
        api.Route("POST", "/api/v1/cmdb/relations", create_relation, admin, api.GLOBAL, body=RelationBody,
                  response=dict[str, Any], status=201,
                  description="`runs`: device → service; `depends_on`: service/device → service/device. "
                              + _ADMIN_NOTE),
        api.Route("DELETE", "/api/v1/cmdb/relations/{relation_id}", delete_relation, admin, api.GLOBAL,
                  response=dict[str, Any], description=_ADMIN_NOTE),
        api.Route("GET", "/api/v1/devices/{device_id}/relations", device_relations, view, scopes.DEVICE,
                  response=dict[str, Any],
                  description="Primary user and login history, networks (subnet, gateway), installed software "
                              "count, declared relations."),
        api.Route("GET", "/api/v1/devices/{device_id}/primary-user", device_primary_user, view, scopes.DEVICE,
                  response=dict[str, Any], description="The user with the most logins seen on the device."),
        api.Route("GET", "/api/v1/devices/{device_id}/impact", device_impact, view, scopes.DEVICE,
                  response=dict[str, Any], description=_IMPACT),
    ]
