"""Response schemas of the grant routes (the paths come from :func:`server.grants.api.routes`;
the request body is generated from :class:`server.grants.api.GrantBody`)."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

_NAMES: Json = {"type": "array", "items": {"type": "string"}, "maxItems": 256}
_ACTIONS: Json = {"type": "array", "items": {"type": "string", "enum": ["view", "control", "tasks"]},
                  "minItems": 1, "maxItems": 3}
_HHMM: Json = {"type": "string", "pattern": "^([01]\\d|2[0-3]):[0-5]\\d$"}
_NUM_OR_NULL: Json = {"type": ["number", "null"]}
_STR_OR_NULL: Json = {"type": ["string", "null"]}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: Json) -> Json:
    return {"type": "object", "required": list(properties), "properties": properties}


SCHEMAS: Json = {
    "GrantWindow": _obj({"days": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 6},
                                  "minItems": 1, "maxItems": 7, "description": "0 = Monday."},
                         "start": _HHMM, "end": _HHMM}),
    "Grant": _obj({
        "grant_id": {"type": "string"}, "status": {"type": "string", "enum": ["pending", "active", "revoked"]},
        "devices": _NAMES, "groups": _NAMES, "technicians": _NAMES, "roles": _NAMES, "actions": _ACTIONS,
        "windows": {"type": "array", "items": _ref("GrantWindow")}, "not_before": {"type": "number"},
        "not_after": {"type": "number"}, "issuer": {"type": "string"}, "approver": _STR_OR_NULL,
        "reason": {"type": "string"}, "created_by": {"type": "string"}, "created_at": {"type": "number"},
        "approved_by": _STR_OR_NULL, "revoked_by": _STR_OR_NULL, "revoked_at": _NUM_OR_NULL}),
    "GrantList": _obj({"grants": {"type": "array", "items": _ref("Grant")}}),
}
