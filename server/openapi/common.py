"""Helpers shared by the per-area OpenAPI modules: operations, parameters, errors, security.

Every operation names the right it needs twice: in ``x-helpline-right`` (machine-readable,
``a+b`` = both, ``a|b`` = either, ``authenticated`` = any logged-in caller, ``none`` = public)
and in its description, so a script and a human reading the rendered document see the same.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

#: Methods that change state: cookie-authenticated calls to them need ``X-CSRF-Token``.
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})

READ_SECURITY: list[Json] = [{"session": []}, {"token": []}]
WRITE_SECURITY: list[Json] = [{"session": [], "csrf": []}, {"token": []}]

SECURITY_SCHEMES: Json = {
    "session": {"type": "apiKey", "in": "cookie", "name": "__Host-helpline",
                "description": "Console session cookie set by POST /api/v1/auth/login (Secure, HttpOnly, "
                               "SameSite=Strict)."},
    "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
             "description": "The session's CSRF token (from login or /api/v1/auth/me); required with the "
                            "cookie on every state-changing request (POST/PUT/DELETE). Not needed with a "
                            "Bearer token."},
    "token": {"type": "http", "scheme": "bearer",
              "description": "API token (`hl_…`) from POST /api/v1/auth/tokens."},
}


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = ref("Error")
NULLABLE_NUM: Json = {"type": ["number", "null"]}
NULLABLE_STR: Json = {"type": ["string", "null"]}


def param(name: str, where: str, schema: Json, description: str, required: bool = False) -> Json:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


def path_param(name: str, description: str) -> Json:
    return param(name, "path", {"type": "string"}, description)


def obj(properties: Json, required: list[str] | None = None, **extra: Any) -> Json:
    """A JSON object schema (required defaults to every property)."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties, **extra}


def array(items: Json) -> Json:
    return {"type": "array", "items": items}


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def operation(method: str, summary: str, *, right: str, ok: Json | None = None, ok_status: int = 200,
              ok_description: str = "", description: str = "", params: list[Json] | None = None,
              body: Json | None = None, errors: dict[int, str] | None = None, public: bool = False,
              content: Json | None = None, extra: Json | None = None) -> Json:
    """One ``{method: operation}`` entry; 401/403 are added for non-public routes.

    ``ok`` is the JSON schema of the success body; ``content`` replaces it for non-JSON bodies.
    """
    right_text = "public (no authentication)" if public else f"`{right}`"
    op: Json = {
        "summary": summary,
        "description": f"Requires right: {right_text}." + (f"\n\n{description}" if description else ""),
        "x-helpline-right": "none" if public else right,
        "security": [] if public else (WRITE_SECURITY if method in WRITE_METHODS else READ_SECURITY),
        "parameters": params or [],
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": json_content(body)}
    success: Json = {"description": ok_description or summary}
    if content is not None:
        success["content"] = content
    elif ok is not None:
        success["content"] = json_content(ok)
    responses: Json = {str(ok_status): success}
    all_errors = dict(errors or {})
    if not public:
        all_errors.setdefault(401, "Not authenticated")
        all_errors.setdefault(403, f"Lacks {right}" + (" (or CSRF token missing)" if method in WRITE_METHODS
                                                       else ""))
    for status, text in sorted(all_errors.items()):
        responses[str(status)] = {"description": text, "content": json_content(ERROR)}
    op["responses"] = responses
    if extra:
        op.update(extra)
    return {method: op}


def merge(*operations: Json) -> Json:
    """Several ``{method: op}`` entries for one path."""
    out: Json = {}
    for entry in operations:
        out.update(entry)
    return out


ERROR_SCHEMA: Json = obj({"error": obj({"code": {"type": "string"}, "message": {"type": "string"}})})
