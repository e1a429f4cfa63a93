"""OpenAPI paths for login, console sessions, API tokens, users, groups and the audit log."""

from __future__ import annotations

from .common import NULLABLE_NUM, NULLABLE_STR, Json, array, merge, obj, operation, param, path_param, ref

_RIGHT_NAMES = ["view_inventory", "remote_view", "remote_control", "run_tasks", "manage_grants",
                "approve_grants", "administer"]
_RIGHTS_BY_GROUP = {"type": "object", "description": "Group (or `*` for all) → right names.",
                    "additionalProperties": {"type": "array", "items": {"type": "string", "enum": _RIGHT_NAMES}}}
_USER_ID = path_param("user_id", "User id or username.")
_GROUP = path_param("group", "Device group, or `*` for all groups.")
_ADMIN = "administer"
_ADMIN_ALL = "`administer` on all groups (`*`)."
_OK = obj({"ok": {"type": "boolean", "const": True}})

SCHEMAS: Json = {
    "User": obj({
        "id": {"type": "string"}, "username": {"type": "string"}, "role": {"type": "string"},
        "disabled": {"type": "boolean"}, "totp_enrolled": {"type": "boolean"}, "created_at": {"type": "number"},
        "last_login": NULLABLE_NUM, "locked": {"type": "boolean"},
        "groups": {**_RIGHTS_BY_GROUP, "description": "Rights per group (in the user list only)."}},
        required=["id", "username", "role", "disabled", "totp_enrolled", "created_at", "last_login", "locked"]),
    "Login": obj({"user": ref("User"), "rights": _RIGHTS_BY_GROUP, "csrf_token": {"type": "string"},
                  "expires_at": {"type": "number", "description": "Idle expiry (epoch s)."}}),
    "LoginError": {"allOf": [ref("Error"), {"type": "object", "properties": {"enrollment": {
        "type": "object", "additionalProperties": True,
        "description": "First login: the TOTP secret/URI to enroll; send the code with the password again."}}}]},
    "ConsoleSession": obj({
        "id": {"type": "string"}, "user_id": {"type": "string"}, "username": {"type": "string"},
        "created_at": {"type": "number"}, "last_seen": {"type": "number"}, "revoked_at": NULLABLE_NUM,
        "peer": {"type": "string"}, "user_agent": {"type": "string"},
        "current": {"type": "boolean", "description": "This request's own session."}}),
    "ApiToken": obj({
        "id": {"type": "string"}, "name": {"type": "string"}, "user_id": {"type": "string"},
        "username": {"type": "string"}, "created_at": {"type": "number"}, "expires_at": NULLABLE_NUM,
        "last_used": NULLABLE_NUM, "revoked_at": NULLABLE_NUM}),
    "AuditRecord": obj({
        "seq": {"type": "integer"}, "ts": {"type": "number"}, "actor": {"type": "string"},
        "action": {"type": "string"}, "target": {"type": "string"},
        "details": {"type": "object", "additionalProperties": True}}),
}


def _auth_paths() -> Json:
    return {
        "/api/v1/auth/login": operation(
            "post", "Log in (password + TOTP)", right="none", public=True,
            description="Sets the `__Host-helpline` session cookie. A cross-origin `Origin` is refused (403). "
                        "At the first login the TOTP is enrolled: the answer carries `enrollment`. Repeated "
                        "failures are rate-limited (429 with Retry-After) and lock the account.",
            body=obj({"username": {"type": "string", "maxLength": 64}, "password": {"type": "string"},
                      "totp": {"type": "string", "maxLength": 16}}, required=["username", "password"]),
            ok=ref("Login"),
            errors={400: "Invalid body", 401: "Wrong credentials or TOTP needed", 403: "Cross-origin login",
                    429: "Too many attempts"},
            extra={"x-helpline-login-error": ref("LoginError")}),
        "/api/v1/auth/logout": operation(
            "post", "Log out", right="authenticated", ok=_OK,
            description="Ends this cookie session and closes its websockets."),
        "/api/v1/auth/me": operation(
            "get", "Who am I", right="authenticated",
            ok=obj({"user": ref("User"), "rights": _RIGHTS_BY_GROUP, "is_admin": {"type": "boolean"},
                    "csrf_token": {"type": ["string", "null"], "description": "Null for Bearer tokens."},
                    "session": obj({"id": NULLABLE_STR, "expires_at": NULLABLE_NUM}),
                    "all_rights": {"type": "array", "items": {"type": "string"}}})),
        "/api/v1/auth/sessions": operation(
            "get", "My live console sessions", right="authenticated",
            params=[param("all", "query", {"type": "string", "enum": ["1"]},
                          "Everyone's sessions (needs administer on `*`).")],
            ok=obj({"items": array(ref("ConsoleSession"))})),
        "/api/v1/auth/sessions/{session_id}/revoke": operation(
            "post", "Revoke a console session", right="authenticated",
            params=[path_param("session_id", "Console session id.")],
            description="Mine, or anyone's for admins; its websockets close at once. Audited.",
            ok=obj({"revoked": {"type": "boolean"}}), errors={404: "No such session"}),
        "/api/v1/auth/tokens": merge(
            operation("get", "My API tokens", right="authenticated",
                      description="Never their values.", ok=obj({"items": array(ref("ApiToken"))})),
            operation("post", "Create an API token", right="authenticated",
                      body=obj({"name": {"type": "string", "maxLength": 100},
                                "ttl_s": {"type": "number", "exclusiveMinimum": 0}}, required=["name"]),
                      description="The value is shown once. Audited.",
                      ok=obj({"id": {"type": "string"}, "token": {"type": "string"}, "expires_at": NULLABLE_NUM}),
                      ok_status=201, errors={400: "Invalid body"})),
        "/api/v1/auth/tokens/{token_id}/revoke": operation(
            "post", "Revoke an API token", right="authenticated", params=[path_param("token_id", "Token id.")],
            description="Mine, or anyone's for admins. Audited.", ok=obj({"revoked": {"type": "boolean"}}),
            errors={404: "No such active token"}),
    }


def _admin_paths() -> Json:
    user_actions = {"type": "string", "enum": ["disable", "enable", "reset-password", "reset-totp", "unlock"]}
    return {
        "/api/v1/users": merge(
            operation("get", "Every account with its rights", right=_ADMIN, description=_ADMIN_ALL,
                      ok=obj({"items": array(ref("User"))})),
            operation("post", "Create an account", right=_ADMIN,
                      description=f"{_ADMIN_ALL} Returns a one-time password; the user enrolls TOTP at first "
                                  "login. Audited.",
                      body=obj({"username": {"type": "string", "maxLength": 64},
                                "role": {"type": "string", "maxLength": 20}}),
                      ok=obj({"user": ref("User"), "password": {"type": "string"}}), ok_status=201,
                      errors={400: "Invalid body or role", 409: "Username taken"})),
        "/api/v1/users/{user_id}/{action}": operation(
            "post", "Disable, enable, reset password/TOTP or unlock an account", right=_ADMIN,
            params=[_USER_ID, param("action", "path", user_actions, "What to do.")],
            description=f"{_ADMIN_ALL} disable/enable → `{{user}}`; reset-password → `{{password}}` (the new "
                        "one-time password); reset-totp and unlock → `{ok}`. Disabling or resetting the "
                        "password closes the user's websockets. Audited.",
            ok={"oneOf": [obj({"user": ref("User")}), obj({"password": {"type": "string"}}), _OK]},
            errors={400: "Cannot disable oneself", 404: "No such user or action"}),
        "/api/v1/users/{user_id}/rights/{group}": merge(
            operation("put", "Set a user's rights on a group", right=_ADMIN, params=[_USER_ID, _GROUP],
                      description=f"{_ADMIN_ALL} `rights: null` = the role's defaults. Audited.",
                      body=obj({"rights": {"type": ["array", "null"],
                                           "items": {"type": "string", "enum": _RIGHT_NAMES}}}),
                      ok=obj({"group": {"type": "string"}, "rights": {"type": "array", "items": {"type": "string"}}}),
                      errors={400: "Unknown right", 404: "No such user or group"}),
            operation("delete", "Remove a user's rights on a group", right=_ADMIN, params=[_USER_ID, _GROUP],
                      description=f"{_ADMIN_ALL} Audited.", ok=obj({"removed": {"type": "boolean"}}),
                      errors={404: "No such user"})),
        "/api/v1/groups": merge(
            operation("get", "Device groups with device counts", right="authenticated",
                      description="Groups where the caller holds view_inventory (all for admins).",
                      ok=obj({"items": array(obj({"name": {"type": "string"}, "devices": {"type": "integer"}}))})),
            operation("post", "Create a device group", right=_ADMIN, description=f"{_ADMIN_ALL} Idempotent. Audited.",
                      body=obj({"name": {"type": "string", "maxLength": 64}}),
                      ok=obj({"name": {"type": "string"}}), ok_status=201,
                      errors={400: "Invalid name"})),
        "/api/v1/audit": operation(
            "get", "Audit log, newest first", right=_ADMIN, description=_ADMIN_ALL, params=[
                param("actor", "query", {"type": "string"}, "Exact actor."),
                param("action", "query", {"type": "string"}, "Action, `*` as wildcard (case-blind)."),
                param("target", "query", {"type": "string"}, "Exact target."),
                param("since", "query", {"type": "number"}, "From (epoch s, inclusive)."),
                param("until", "query", {"type": "number"}, "Until (epoch s, exclusive)."),
                param("before", "query", {"type": "integer"}, "Only seq below this (the previous `next_before`)."),
                param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "Default 100.")],
            ok=obj({"items": array(ref("AuditRecord")), "next_before": {"type": ["integer", "null"]}}),
            errors={400: "Non-numeric filter"}),
        "/api/v1/audit/verify": operation(
            "get", "Verify the audit hash chain", right=_ADMIN, description=_ADMIN_ALL,
            ok=obj({"ok": {"type": "boolean"}, "records": {"type": "integer"},
                    "first_bad_seq": {"type": ["integer", "null"]}, "problem": NULLABLE_STR})),
    }


def paths() -> Json:
    return _auth_paths() | _admin_paths()
