"""OpenAPI paths for unattended-access grants."""

from __future__ import annotations

from .common import NULLABLE_NUM, NULLABLE_STR, Json, array, merge, obj, operation, param, path_param, ref

_GRANT = path_param("grant_id", "Grant id.")
_NAMES = {"type": "array", "items": {"type": "string"}, "maxItems": 256}
_ACTIONS = {"type": "array", "items": {"type": "string", "enum": ["view", "control", "tasks"]},
            "minItems": 1, "maxItems": 3}
_HHMM = {"type": "string", "pattern": "^([01]\\d|2[0-3]):[0-5]\\d$"}

SCHEMAS: Json = {
    "GrantWindow": obj({"days": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 6},
                                 "minItems": 1, "maxItems": 7, "description": "0 = Monday."},
                        "start": _HHMM, "end": _HHMM}),
    "GrantRequest": obj({
        "devices": _NAMES, "groups": _NAMES, "technicians": _NAMES, "roles": _NAMES, "actions": _ACTIONS,
        "windows": {"type": "array", "items": ref("GrantWindow"), "maxItems": 32,
                    "description": "Empty: any time between not_before and not_after."},
        "not_before": {"type": "number", "description": "Epoch seconds (default now)."},
        "not_after": {"type": "number", "description": "Epoch seconds; or give duration_s."},
        "duration_s": {"type": "number"}, "reason": {"type": "string"}},
        required=["actions"], description="At least one device or group; at least one technician or role."),
    "Grant": obj({
        "grant_id": {"type": "string"}, "status": {"type": "string", "enum": ["pending", "active", "revoked"]},
        "devices": _NAMES, "groups": _NAMES, "technicians": _NAMES, "roles": _NAMES, "actions": _ACTIONS,
        "windows": array(ref("GrantWindow")), "not_before": {"type": "number"}, "not_after": {"type": "number"},
        "issuer": {"type": "string"}, "approver": NULLABLE_STR, "reason": {"type": "string"},
        "created_by": {"type": "string"}, "created_at": {"type": "number"}, "approved_by": NULLABLE_STR,
        "revoked_by": NULLABLE_STR, "revoked_at": NULLABLE_NUM}),
}

_SCOPE = " on every device group the grant touches"


def paths() -> Json:
    return {
        "/api/v1/grants": merge(
            operation("post", "Create a grant", right="manage_grants", body=ref("GrantRequest"),
                      description=f"`manage_grants`{_SCOPE}. Signed by the server's grant key; `pending` "
                                  "until a second person approves when four-eyes is on, else `active`. Audited.",
                      ok=ref("Grant"), ok_status=201,
                      errors={400: "Invalid grant request", 404: "Unknown device"}),
            operation("get", "List grants", right="manage_grants|approve_grants",
                      params=[param("status", "query", {"type": "string", "enum": ["pending", "active", "revoked"]},
                                    "Only this status.")],
                      description="Only grants whose every group the caller manages or approves.",
                      ok=obj({"grants": array(ref("Grant"))}))),
        "/api/v1/grants/{grant_id}": operation(
            "get", "One grant", right="manage_grants", params=[_GRANT], ok=ref("Grant"),
            description=f"`manage_grants`{_SCOPE}.", errors={404: "No such grant"}),
        "/api/v1/grants/{grant_id}/approve": operation(
            "post", "Approve a pending grant", right="approve_grants", params=[_GRANT], ok=ref("Grant"),
            description=f"`approve_grants`{_SCOPE}; not by its issuer (four-eyes). Re-signed with the approver.",
            errors={403: "Lacks approve_grants, or approving one's own grant", 404: "No such grant",
                    409: "Not pending"}),
        "/api/v1/grants/{grant_id}/revoke": operation(
            "post", "Revoke a grant", right="manage_grants", params=[_GRANT], ok=ref("Grant"),
            description=f"`manage_grants`{_SCOPE}. Audited; pushed to connected agents.",
            errors={404: "No such grant"}),
    }
