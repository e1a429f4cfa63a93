"""OpenAPI paths for agent enrollment (public: the one-time token is the credential)."""

from __future__ import annotations

from .common import Json, obj, operation

SCHEMAS: Json = {
    "EnrollRequest": obj({"token": {"type": "string", "description": "One-time enrollment token."},
                          "csr": {"type": "string", "description": "PEM certificate signing request."}}),
    "Enrollment": obj({
        "device_id": {"type": "string"}, "group": {"type": "string"},
        "certificate": {"type": "string", "description": "The device's client certificate (PEM)."},
        "grant_public_key": {"type": "string", "description": "PEM key the agent verifies grants with."},
        "agent_url": {"type": "string", "description": "`wss://host:port/agent` (mutual TLS)."}}),
}


def paths() -> Json:
    return {
        "/api/v1/enroll/ca.pem": operation(
            "get", "The organisation's CA certificate", right="none", public=True,
            description="The agent checks it against the fingerprint it was given before trusting it.",
            content={"application/x-pem-file": {"schema": {"type": "string"}}}),
        "/api/v1/enroll": operation(
            "post", "Enroll a device", right="none", public=True,
            description="Body at most 16 KiB. Every refusal is audited.",
            body={"$ref": "#/components/schemas/EnrollRequest"}, ok={"$ref": "#/components/schemas/Enrollment"},
            errors={400: "Malformed body or CSR", 401: "Token invalid, used or expired", 413: "Body too large"}),
    }
