"""OpenAPI paths for remote sessions, their notes, recordings and the technician's stream websocket."""

from __future__ import annotations

from .common import NULLABLE_NUM, NULLABLE_STR, Json, array, merge, obj, operation, param, path_param, ref

_DEVICE = path_param("device_id", "Device id.")
_SESSION = path_param("session_id", "Session id.")
_MODE = {"type": "string", "enum": ["view", "control"]}
_STATE = {"type": "string", "enum": ["requested", "offered", "consented", "denied", "timed_out", "streaming",
                                     "ended"]}

_LIVE_PROPS: Json = {
    "session_id": {"type": "string"}, "device_id": {"type": "string"}, "group": {"type": "string"},
    "technician": {"type": "string"}, "requested_mode": _MODE, "mode": {"type": ["string", "null"]},
    "pending_mode": {"type": ["string", "null"]}, "state": _STATE, "reason": {"type": "string"},
    "grant_id": NULLABLE_STR, "answered_by": NULLABLE_STR, "end_reason": NULLABLE_STR, "ended_by": NULLABLE_STR,
    "created_at": {"type": "number"},
    "stream_url": {"type": "string", "description": "Path of the stream websocket."},
}

SCHEMAS: Json = {
    "LiveSession": obj(_LIVE_PROPS, description="A session as the session manager holds it while it runs."),
    "Notes": {"type": ["object", "null"], "required": ["text", "author", "updated_at", "revision"],
              "properties": {"text": {"type": "string", "maxLength": 8000}, "author": {"type": "string"},
                             "updated_at": {"type": "number"}, "revision": {"type": "integer"}},
              "description": "Null when no notes were written."},
    "Session": obj(_LIVE_PROPS | {
        "started_at": NULLABLE_NUM, "ended_at": NULLABLE_NUM, "bytes_to_technician": {"type": "integer"},
        "bytes_to_agent": {"type": "integer"}, "refused_inputs": {"type": "integer"},
        "recording": {"type": "boolean"}, "notes": ref("Notes")},
        required=["session_id", "device_id", "group", "technician", "state", "created_at"],
        description="A stored session (live fields state/mode/pending_mode are overlaid while it runs); "
                    "POST /end returns it without notes."),
    "SessionList": obj({"sessions": array(ref("Session"))}),
    "RecordingInfo": obj({
        "session_id": {"type": "string"}, "device_id": {"type": "string"}, "group": {"type": "string"},
        "technician": {"type": "string"}, "mode": {"type": ["string", "null"]}, "answered_by": NULLABLE_STR,
        "started_at": NULLABLE_NUM, "ended_at": NULLABLE_NUM, "end_reason": NULLABLE_STR,
        "format": {"type": "string", "const": "hlrec1"}, "size": {"type": "integer"},
        "complete": {"type": "boolean", "description": "False while the session still records."},
        "meta": {"type": "object", "additionalProperties": True, "description": "The recorder's metadata."},
        "data_url": {"type": "string"}}),
}

_STREAM_DESCRIPTION = """\
**Websocket.** Send `GET` with `Upgrade: websocket`; the server answers `101 Switching Protocols`.
The `Origin` header must be the console's own origin (else 403 `bad_origin`, checked before anything else).
Only the technician who requested the session may attach, once (409 `busy` if a viewer is attached,
410 `ended` if the session is over). REMOTE_CONTROL is needed as well when the session was requested in
control mode. The socket is closed at once when the caller's console session is revoked or the account
disabled.

Messages are relayed to and from the device's agent unchanged (see `protocol/stream.py`):
* server → client **binary**: screen rectangles and cursor shapes, a 21-byte big-endian header
  (magic 0xA1, kind, flags, monitor, x, y, w, h, encoding, sequence, length) then the payload;
* server → client **text** (JSON with `type`): `cursor`, `monitors`, `stats`, `error`;
* client → server **text**: `ack {seq}` after drawing an update's END_OF_FRAME rectangle, `input.mouse`,
  `input.key`, `input.text` (refused and audited on view-only sessions), `monitor.select`, `quality`.
Either side closing ends the session."""

_POST_SESSION_BODY = obj({
    "mode": {**_MODE, "default": "view"},
    "reason": {"type": "string", "maxLength": 256, "default": ""},
    "grant_id": {"type": "string", "description": "Unattended access under this grant (no consent prompt)."}},
    required=[])


def paths() -> Json:
    return {
        "/api/v1/devices/{device_id}/sessions": merge(
            operation("post", "Request a remote session", right="remote_view", params=[_DEVICE],
                      description="`remote_control` as well for mode `control`. The device user is asked to "
                                  "consent unless a usable grant is given.",
                      body=_POST_SESSION_BODY, ok=ref("LiveSession"), ok_status=201,
                      errors={400: "Invalid body", 404: "No such device",
                              409: "Device revoked or offline, or grant unusable"}),
            operation("get", "Sessions of a device", right="remote_view", params=[_DEVICE],
                      description="Newest first, at most 200.", ok=ref("SessionList"),
                      errors={404: "No such device"})),
        "/api/v1/sessions/{session_id}": operation(
            "get", "One session", right="remote_view", params=[_SESSION], ok=ref("Session"),
            errors={404: "No such session"}),
        "/api/v1/sessions/{session_id}/end": operation(
            "post", "End a session", right="remote_view", params=[_SESSION], ok=ref("Session"),
            description="Only the session's technician or an admin while it runs.",
            errors={404: "No such session"}),
        "/api/v1/sessions/{session_id}/mode": operation(
            "post", "Ask to switch view/control", right="remote_view", params=[_SESSION],
            description="`remote_control` as well to switch to control. The device user must consent; "
                        "answers 202 with the pending mode.",
            body=obj({"mode": _MODE}), ok=ref("LiveSession"), ok_status=202,
            errors={400: "Invalid mode", 404: "No such session", 409: "Session ended or not streaming"}),
        "/api/v1/sessions/{session_id}/notes": operation(
            "put", "Replace the session's notes", right="remote_view", params=[_SESSION],
            description="Only the session's technician or an admin, while it runs or after. At most 8000 "
                        "characters, no control characters but newline and tab. Audited "
                        "`session.notes.update`.",
            body=obj({"text": {"type": "string", "maxLength": 8000}}),
            ok=obj({"session_id": {"type": "string"}, "notes": ref("Notes")}),
            errors={400: "Invalid text", 404: "No such session"}),
        "/api/v1/sessions/{session_id}/stream": operation(
            "get", "Technician's stream (websocket)", right="remote_view", params=[
                _SESSION, param("Upgrade", "header", {"type": "string", "const": "websocket"},
                                "Websocket upgrade.", required=True)],
            description=_STREAM_DESCRIPTION, ok_status=101, ok_description="Switching to the websocket",
            errors={404: "No such session", 409: "A viewer is already attached", 410: "The session has ended"},
            extra={"x-helpline-websocket": True}),
        "/api/v1/sessions/{session_id}/recording": operation(
            "get", "Recording metadata", right="remote_view", params=[_SESSION], ok=ref("RecordingInfo"),
            errors={404: "No such session, or no recording"}),
        "/api/v1/sessions/{session_id}/recording/data": operation(
            "get", "Recording stream (.hlrec)", right="remote_view", params=[_SESSION],
            description="Records `>dBBI` + payload (see server/sessions/relay.py). Audited "
                        "`session.recording.view`.",
            content={"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            errors={404: "No such session, or no recording"}),
    }


