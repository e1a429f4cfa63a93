"""Response schemas of the CMDB routes (the paths come from :data:`server.cmdb.api.ROUTES`)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


_DEVICE_ID = _param("device_id", "path", {"type": "string"}, "Device id (from its certificate).")
_TIME = {"oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}
_NULLABLE_NUM = {"type": ["number", "null"]}


def _ok(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "200": {"description": description,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}},
        "400": {"description": "Invalid parameter", "content": {"application/json": {"schema": _ERROR}}},
        "401": {"description": "Not authenticated", "content": {"application/json": {"schema": _ERROR}}},
        "403": {"description": "Lacks view_inventory on the group",
                "content": {"application/json": {"schema": _ERROR}}},
        "404": {"description": "No such device", "content": {"application/json": {"schema": _ERROR}}},
    }


def _get(summary: str, ref: str, params: list[dict[str, Any]], description: str = "") -> dict[str, Any]:
    text = "Requires right: `view_inventory` on the device's group." + (f"\n\n{description}" if description else "")
    op: dict[str, Any] = {"summary": summary, "description": text, "x-helpline-right": "view_inventory",
                          "parameters": params, "responses": _ok(ref, summary),
                          "security": [{"session": []}, {"token": []}]}
    return {"get": op}


SCHEMAS: dict[str, Any] = {
    "DeviceItem": {"type": "object", "required": ["id", "hostname", "group", "status", "last_seen", "os", "ip",
                                                  "alerts_open"],
                   "properties": {"id": {"type": "string"}, "hostname": {"type": "string"},
                                  "group": {"type": "string"},
                                  "status": {"type": "string", "enum": ["online", "offline", "revoked"]},
                                  "last_seen": _NULLABLE_NUM, "os": {"type": "string"}, "ip": {"type": "string"},
                                  "serial": {"type": "string"}, "alerts_open": {"type": "integer"}}},
    "DevicePage": {"type": "object", "required": ["items", "total", "page", "per_page"],
                   "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceItem"}},
                                  "total": {"type": "integer"}, "page": {"type": "integer"},
                                  "per_page": {"type": "integer"}}},
    "Device": {"allOf": [{"$ref": "#/components/schemas/DeviceItem"}, {"type": "object", "properties": {
        "agent_version": {"type": "string"}, "enrolled_at": {"type": "number"}, "model": {"type": "string"},
        "last_inventory": _NULLABLE_NUM,
        "screen_backend": {"type": ["string", "null"],
                           "description": "The screen backend the agent last reported (hello, device.screen_backend): "
                                          "x11, wayland-mutter or wayland-portal (null: never said)."},
        "screen_view_only": {"type": "boolean",
                             "description": "The device said its screen sessions are view-only (a wlroots desktop: "
                                            "its portal offers ScreenCast but no RemoteDesktop); a control session "
                                            "request is refused 409 device_view_only."},
        "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}}}]},
    "Inventory": {"type": "object", "required": ["device_id", "sections"], "properties": {
        "device_id": {"type": "string"}, "updated_at": _NULLABLE_NUM,
        "sections": {"type": "object", "description": "Section name → the agent's data for it.",
                     "additionalProperties": True}}},
    "Package": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                                 "arch": {"type": "string"}, "source": {"type": "string"},
                                                 "vendor": {"type": "string"}}},
    "DeviceSoftware": {"type": "object", "required": ["device_id", "items", "total"], "properties": {
        "device_id": {"type": "string"}, "total": {"type": "integer"},
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Package"}}}},
    "SoftwareHits": {"type": "object", "required": ["items", "total"], "properties": {
        "total": {"type": "integer"}, "page": {"type": "integer"}, "per_page": {"type": "integer"},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "device_id": {"type": "string"}, "hostname": {"type": "string"}, "group": {"type": "string"},
            "name": {"type": "string"}, "version": {"type": "string"}, "arch": {"type": "string"},
            "source": {"type": "string"}}}}}},
    "Changes": {"type": "object", "required": ["device_id", "items"], "properties": {
        "device_id": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "ts": {"type": "number"}, "section": {"type": "string"}, "path": {"type": "string"},
            "change": {"type": "string",
                       "enum": ["added", "removed", "changed", "section_added", "section_removed"]},
            "old": {"type": ["string", "null"]}, "new": {"type": ["string", "null"]}}}}}},
    "Health": {"type": "object", "required": ["device_id", "from", "to", "step", "points"], "properties": {
        "device_id": {"type": "string"}, "from": {"type": "number"}, "to": {"type": "number"},
        "step": {"type": "number"},
        "points": {"type": "array", "items": {"type": "object", "properties": {
            "ts": {"type": "number"}, "samples": {"type": "integer"}, "cpu_avg": _NULLABLE_NUM,
            "cpu_max": _NULLABLE_NUM, "mem_avg": _NULLABLE_NUM, "mem_max": _NULLABLE_NUM,
            "disk_min_free": _NULLABLE_NUM}}}}},
    "Alert": {"type": "object", "properties": {
        "id": {"type": "integer"}, "device_id": {"type": "string"}, "rule": {"type": "string"},
        "subject": {"type": "string"}, "severity": {"type": "string", "enum": ["warning", "critical"]},
        "status": {"type": "string", "enum": ["open", "resolved"]}, "message": {"type": "string"},
        "opened_at": {"type": "number"}, "updated_at": {"type": "number"}, "resolved_at": _NULLABLE_NUM}},
    "AlertList": {"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}}},
}
