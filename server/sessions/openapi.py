"""Response schemas of the session routes (the paths come from the routes in :mod:`.api`,
:mod:`.recordings_api` and :mod:`.tunnel`)."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: Json, required: list[str] | None = None, **extra: Any) -> Json:
    """A JSON object schema (every property required unless ``required`` says otherwise)."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties, **extra}


_NULLABLE_NUM: Json = {"type": ["number", "null"]}
_NULLABLE_STR: Json = {"type": ["string", "null"]}
_MODE: Json = {"type": "string", "enum": ["view", "control"]}
_STATE: Json = {"type": "string", "enum": ["requested", "offered", "consented", "denied", "timed_out", "streaming",
                                           "ended"]}

_LIVE_PROPS: Json = {
    "session_id": {"type": "string"}, "device_id": {"type": "string"}, "group": {"type": "string"},
    "technician": {"type": "string"}, "requested_mode": _MODE, "mode": {"type": ["string", "null"]},
    "pending_mode": {"type": ["string", "null"]}, "state": _STATE, "reason": {"type": "string"},
    "answered_by": _NULLABLE_STR, "end_reason": _NULLABLE_STR, "ended_by": _NULLABLE_STR,
    "created_at": {"type": "number"},
    "stream_url": {"type": "string", "description": "Path of the stream websocket."},
    "document_id": {**_NULLABLE_STR, "description": "Unattended: the approver-signed grant document it names."},
    "challenge": {"type": ["object", "null"], "description": (
        "Unattended, while the agent waits: what the technician signs (`helpline approve prove`) and posts to "
        "`POST /api/v1/sessions/{session_id}/proof`."), "properties": {
            "nonce": {"type": "string"}, "document_id": {"type": "string"}, "action": _MODE,
            "device_id": {"type": "string"}, "expires_at": {"type": "number"},
            "for": {"type": "string", "description": "Who must answer it: the requester, or a joiner (join and "
                                                      "hand-off)."}}},
}

_NAMES: Json = {"type": "array", "items": {"type": "string"}}
_PEOPLE_PROPS: Json = {
    "controller": {**_NULLABLE_STR, "description": "Who controls; null once the controller left without handing "
                                                   "over (everyone watches, nobody controls)."},
    "viewers": {**_NAMES, "description": "Admitted technicians, the controller among them."},
    "invited": _NAMES, "asking": _NAMES, "joining": {**_NAMES, "description": "The device is being asked."}}

SCHEMAS: Json = {
    "LiveSession": _obj(_LIVE_PROPS | {"people": _obj(_PEOPLE_PROPS)}, required=list(_LIVE_PROPS),
                        description="A session as the session manager holds it while it runs."),
    "SessionPeople": _obj({"session_id": {"type": "string"}, **_PEOPLE_PROPS, "admitted": {"type": "boolean"},
                           "candidates": _NAMES}, required=["session_id", *_PEOPLE_PROPS],
                          description="Join and hand-off: who is in a running session."),
    "Notes": {"type": ["object", "null"], "required": ["text", "author", "updated_at", "revision"],
              "properties": {"text": {"type": "string", "maxLength": 8000}, "author": {"type": "string"},
                             "updated_at": {"type": "number"}, "revision": {"type": "integer"}},
              "description": "Null when no notes were written."},
    "SessionNotes": _obj({"session_id": {"type": "string"}, "notes": _ref("Notes")}),
    "SessionChat": _obj({"session_id": {"type": "string"}, "chat": {"type": "array", "items": _obj({
        "seq": {"type": "integer"}, "sender": {"type": "string", "enum": ["technician", "user"]},
        "name": {"type": "string"}, "text": {"type": "string"}, "at": {"type": "number"}})}}),
    "Session": _obj(_LIVE_PROPS | {
        "started_at": _NULLABLE_NUM, "ended_at": _NULLABLE_NUM, "bytes_to_technician": {"type": "integer"},
        "bytes_to_agent": {"type": "integer"}, "refused_inputs": {"type": "integer"},
        "recording": {"type": "boolean"}, "notes": _ref("Notes")},
        required=["session_id", "device_id", "group", "technician", "state", "created_at"],
        description="A stored session (live fields state/mode/pending_mode are overlaid while it runs); "
                    "POST /end returns it without notes."),
    "SessionList": _obj({"sessions": {"type": "array", "items": _ref("Session")}}),
    "DeviceGrants": _obj({"device_id": {"type": "string"}, "grants": {"type": "array", "items": _obj({
        "document_id": {"type": "string"}, "actions": {"type": "array", "items": {"type": "string"}},
        "technician_names": {"type": "array", "items": {"type": "string"}},
        "technicians": {"type": "array", "items": {"type": "string"}},
        "not_before": {"type": "number"}, "not_after": {"type": "number"},
        "windows": {"type": "integer", "description": "How many device-local time windows restrict it."},
        "issuer": {"type": "string"}, "reason": {"type": "string"},
        "held_by_device": {"type": "boolean", "description": "The device last reported it holds it as verified."},
        "device_refused": {**_NULLABLE_STR, "description": "Why the device last refused it, if it did."}})}},
        description="Grant documents the server stores for the device; the device decides."),
    "RecordingInfo": _obj({
        "session_id": {"type": "string"}, "device_id": {"type": "string"}, "group": {"type": "string"},
        "technician": {"type": "string"}, "mode": {"type": ["string", "null"]}, "answered_by": _NULLABLE_STR,
        "started_at": _NULLABLE_NUM, "ended_at": _NULLABLE_NUM, "end_reason": _NULLABLE_STR,
        "format": {"type": "string", "const": "hlrec1"}, "size": {"type": "integer"},
        "complete": {"type": "boolean", "description": "False while the session still records."},
        "meta": {"type": "object", "additionalProperties": True, "description": "The recorder's metadata."},
        "data_url": {"type": "string"}}),
}
