"""Response schemas of the accounts routes: login, console sessions, API tokens, users, groups,
audit (the paths come from the route tables in :mod:`.auth_routes`, :mod:`.users_routes` and
:mod:`.audit_routes`; request bodies and queries are generated from their msgspec types)."""

from __future__ import annotations

from typing import Any

from ..auth.rights import Right

Json = dict[str, Any]

_NUM_OR_NULL: Json = {"type": ["number", "null"]}
_STR_OR_NULL: Json = {"type": ["string", "null"]}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: Json, required: list[str] | None = None, **extra: Any) -> Json:
    """A JSON object schema (every property required unless ``required`` says otherwise)."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties, **extra}


def _items(name: str) -> Json:
    return _obj({"items": {"type": "array", "items": _ref(name)}})


_RIGHTS_BY_GROUP: Json = {"type": "object", "description": "Group (or `*` for all) → right names.",
                          "additionalProperties": {"type": "array",
                                                   "items": {"type": "string", "enum": Right.names()}}}

SCHEMAS: Json = {
    "User": _obj({
        "id": {"type": "string"}, "username": {"type": "string"}, "role": {"type": "string"},
        "disabled": {"type": "boolean"}, "totp_enrolled": {"type": "boolean"}, "created_at": {"type": "number"},
        "last_login": _NUM_OR_NULL, "locked": {"type": "boolean"},
        "must_change_password": {"type": "boolean", "description": "The password was generated: until the user "
                                 "changes it (POST /api/v1/auth/password) their console session reaches nothing else."},
        "groups": {**_RIGHTS_BY_GROUP, "description": "Rights per group (in the user list only)."}},
        required=["id", "username", "role", "disabled", "totp_enrolled", "created_at", "last_login", "locked",
                  "must_change_password"]),
    "Login": _obj({"user": _ref("User"), "rights": _RIGHTS_BY_GROUP, "csrf_token": {"type": "string"},
                   "expires_at": {"type": "number", "description": "Idle expiry (epoch s)."}}),
    "LoginError": {"allOf": [_ref("Error"), {"type": "object", "properties": {"enrollment": {
        "type": "object", "additionalProperties": True,
        "description": "First login: the TOTP secret/URI to enroll; send the code with the password again."}}}]},
    "LoggedOut": _obj({"ok": {"type": "boolean", "const": True}}),
    "Me": _obj({
        "user": _ref("User"), "rights": _RIGHTS_BY_GROUP, "is_admin": {"type": "boolean"},
        "csrf_token": {**_STR_OR_NULL, "description": "Null for Bearer tokens."},
        "session": _obj({"id": _STR_OR_NULL, "expires_at": _NUM_OR_NULL}),
        "all_rights": {"type": "array", "items": {"type": "string"}}}),
    "ConsoleSession": _obj({
        "id": {"type": "string"}, "user_id": {"type": "string"}, "username": {"type": "string"},
        "created_at": {"type": "number"}, "last_seen": {"type": "number"}, "revoked_at": _NUM_OR_NULL,
        "peer": {"type": "string"}, "user_agent": {"type": "string"},
        "current": {"type": "boolean", "description": "This request's own session."}}),
    "ConsoleSessionList": _items("ConsoleSession"),
    "ApiToken": _obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "user_id": {"type": "string"},
        "username": {"type": "string"}, "created_at": {"type": "number"}, "expires_at": _NUM_OR_NULL,
        "last_used": _NUM_OR_NULL, "revoked_at": _NUM_OR_NULL}),
    "ApiTokenList": _items("ApiToken"),
    "NewApiToken": _obj({"id": {"type": "string"}, "token": {"type": "string", "description": "Shown once."},
                         "expires_at": _NUM_OR_NULL}),
    "Revoked": _obj({"revoked": {"type": "boolean", "description": "False: it had already ended."}}),
    "UserList": _items("User"),
    "NewAccount": _obj({"user": _ref("User"), "password": {"type": "string", "description": "Shown once."}}),
    "UserChanged": _obj({"user": _ref("User")}),
    "NewPassword": _obj({"password": {"type": "string", "description": "The new one-time password."}}),
    "AccountChanged": _obj({"ok": {"type": "boolean", "const": True}}),
    "GroupRights": _obj({"group": {"type": "string"},
                         "rights": {"type": "array", "items": {"type": "string", "enum": Right.names()}}}),
    "RightsRemoved": _obj({"removed": {"type": "boolean", "description": "False: the user had none there."}}),
    "GroupList": _obj({"items": {"type": "array", "items": _obj({"name": {"type": "string"},
                                                                 "devices": {"type": "integer"}})}}),
    "GroupCreated": _obj({"name": {"type": "string"}}),
    "AuditRecord": _obj({
        "seq": {"type": "integer"}, "ts": {"type": "number"}, "actor": {"type": "string"},
        "action": {"type": "string"}, "target": {"type": "string"},
        "details": {"type": "object", "additionalProperties": True}}),
    "AuditPage": _obj({"items": {"type": "array", "items": _ref("AuditRecord")},
                       "next_before": {"type": ["integer", "null"],
                                       "description": "Pass as `before` for the next (older) page."}}),
    "AuditVerification": _obj({"ok": {"type": "boolean"}, "records": {"type": "integer"},
                               "first_bad_seq": {"type": ["integer", "null"]}, "problem": _STR_OR_NULL}),
}
