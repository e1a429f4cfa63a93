"""The three ticket systems behind one small interface: create, find, add a note, find a note.

* :class:`ServiceNow` — Table API: ``POST /api/now/table/incident``, ``PATCH
  /api/now/table/incident/{sys_id}`` with ``work_notes``; basic auth or an OAuth bearer token.
  A work note's own id is not in the PATCH answer, so it is read back from ``sys_journal_field``
  (which is also how a write whose answer was lost is found before sending it again).
* :class:`Jira` — Jira (Service Management) Cloud REST v3: ``POST /rest/api/3/issue``, ``POST
  /rest/api/3/issue/{key}/comment`` (the answer's ``id`` is recorded); basic auth with the
  account's e-mail and an API token. A lost answer is checked by listing the issue's comments.
* :class:`Webhook` — a JSON POST signed with HMAC-SHA256 (:mod:`.webhook`); the receiver
  deduplicates by ``idempotency_key``, since we cannot ask it what it already has.

Every note carries a marker line ``helpline-writeback:<idempotency key>``: that is what the
look-up before a re-send searches for.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import quote

import aiohttp

from . import webhook
from .http import TicketError, call, tls_context

Kind = Literal["servicenow", "jira", "webhook"]
KINDS: tuple[Kind, ...] = ("servicenow", "jira", "webhook")

#: Ticket keys as a technician types them (INC0010023, HELP-12, a sys_id): nothing that could
#: change a query or a path.
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")

#: Request urgency → ServiceNow (impact, urgency) (ServiceNow derives priority: 1-1 → P1
#: Critical, 2-1 → P2 High, 2-2 → P3 Moderate, 3-3 → P5 Planning), Jira priority name, and the
#: webhook's number (1 = most urgent).
SN_IMPACT_URGENCY: dict[str, tuple[str, str]] = {"critical": ("1", "1"), "high": ("2", "1"),
                                                 "normal": ("2", "2"), "low": ("3", "3")}
JIRA_PRIORITY: dict[str, str] = {"critical": "Highest", "high": "High", "normal": "Medium", "low": "Low"}
WEBHOOK_PRIORITY: dict[str, int] = {"critical": 1, "high": 2, "normal": 3, "low": 4}


@dataclass(frozen=True)
class ConnectorSpec:
    """A configured connector with its secret decrypted (lives only in memory, for one call)."""

    id: str
    name: str
    kind: Kind
    url: str
    settings: dict[str, Any]
    secret: str


@dataclass(frozen=True)
class TicketRef:
    key: str          #: what people read: INC0010023, HELP-12, the webhook receiver's key
    remote_id: str    #: what the API addresses: ServiceNow's sys_id, Jira's key
    url: str = ""


@dataclass(frozen=True)
class NewTicket:
    summary: str
    details: str
    device: str
    requester: str
    urgency: str
    request_id: str
    request_number: int
    idempotency_key: str


@dataclass(frozen=True)
class Note:
    text: str
    marker: str
    #: The same facts as structured data (the webhook sends them beside the text).
    facts: dict[str, Any] = field(default_factory=dict)


class Connector(Protocol):
    async def create(self, ticket: NewTicket) -> TicketRef: ...

    async def find(self, key: str) -> TicketRef: ...

    async def add_note(self, ref: TicketRef, note: Note) -> str:
        """Write the note; return its id in the remote system."""

    async def find_note(self, ref: TicketRef, marker: str) -> str | None:
        """The id of a note carrying ``marker`` already, None if there is none; TicketError if unknown."""

    @property
    def can_find_notes(self) -> bool: ...


def build(spec: ConnectorSpec, http: aiohttp.ClientSession) -> Connector:
    if spec.kind == "servicenow":
        return ServiceNow(spec, http)
    if spec.kind == "jira":
        return Jira(spec, http)
    return Webhook(spec, http)


class _Base:
    def __init__(self, spec: ConnectorSpec, http: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.http = http
        self.base = spec.url.rstrip("/")
        self.ssl = tls_context(str(spec.settings.get("ca_pem") or ""))

    def _basic(self, user: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{self.spec.secret}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _call(self, method: str, path: str, what: str, body: Any = None) -> Any:
        return await call(self.http, method, self.base + path, ssl_context=self.ssl, headers=self._auth(),
                          json_body=body, what=f"{self.spec.name}: {what}")

    def _auth(self) -> dict[str, str]:
        raise NotImplementedError


def _result(answer: Any, what: str) -> dict[str, Any]:
    result = answer.get("result") if isinstance(answer, dict) else None
    if isinstance(result, list):
        result = result[0] if result else None
    if not isinstance(result, dict):
        raise TicketError(f"{what}: unexpected answer", definite=False)
    return result


class ServiceNow(_Base):
    can_find_notes = True

    def _auth(self) -> dict[str, str]:
        if self.spec.settings.get("auth") == "oauth":
            return {"Authorization": f"Bearer {self.spec.secret}"}
        return self._basic(str(self.spec.settings.get("username", "")))

    def _ref(self, record: dict[str, Any]) -> TicketRef:
        sys_id = str(record.get("sys_id", ""))
        if not _SYS_ID.match(sys_id):
            raise TicketError("ServiceNow answered without a valid sys_id", definite=False)
        number = record.get("number")
        # The key is stored, shown in the console and audited: only a well-formed number, else the sys_id.
        key = number if isinstance(number, str) and re.match(KEY_PATTERN, number) else sys_id
        return TicketRef(key, sys_id, f"{self.base}/nav_to.do?uri=incident.do%3Fsys_id%3D{sys_id}")

    async def create(self, ticket: NewTicket) -> TicketRef:
        impact, urgency = SN_IMPACT_URGENCY.get(ticket.urgency, ("2", "2"))
        body = {"short_description": ticket.summary[:160], "description": _description(ticket),
                "impact": impact, "urgency": urgency, "contact_type": "self-service",
                "correlation_id": ticket.idempotency_key, "correlation_display": "Helpline"}
        answer = await self._call("POST", "/api/now/table/incident?sysparm_fields=sys_id,number", "create incident",
                                  body)
        return self._ref(_result(answer, "create incident"))

    async def find(self, key: str) -> TicketRef:
        if _SYS_ID.match(key):
            query = f"/api/now/table/incident/{key}?sysparm_fields=sys_id,number"
        else:
            query = (f"/api/now/table/incident?sysparm_query=number%3D{quote(key, safe='')}"
                     "&sysparm_fields=sys_id,number&sysparm_limit=1")
        answer = await self._call("GET", query, f"find incident {key}")
        result = answer.get("result") if isinstance(answer, dict) else None
        if result in ([], None):
            raise TicketError(f"{self.spec.name}: no incident {key}", status=404, permanent=True)
        return self._ref(_result(answer, f"find incident {key}"))

    async def add_note(self, ref: TicketRef, note: Note) -> str:
        await self._call("PATCH", f"/api/now/table/incident/{ref.remote_id}?sysparm_fields=sys_id",
                         f"work note on {ref.key}", {"work_notes": sn_journal_text(note.text)})
        try:
            found = await self.find_note(ref, note.marker)
        except TicketError:
            found = None  # written; only its id could not be read back
        return found or f"incident:{ref.remote_id}"

    async def find_note(self, ref: TicketRef, marker: str) -> str | None:
        query = (f"/api/now/table/sys_journal_field?sysparm_query=element_id%3D{ref.remote_id}"
                 f"%5Eelement%3Dwork_notes%5EvalueLIKE{quote(marker, safe='')}&sysparm_fields=sys_id&sysparm_limit=1")
        answer = await self._call("GET", query, f"look for the work note on {ref.key}")
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, list):
            raise TicketError("journal look-up: unexpected answer", definite=False)
        return str(result[0].get("sys_id")) if result and isinstance(result[0], dict) else None


#: ServiceNow renders ``[code]…[/code]`` in a journal field (work notes) as HTML; the note carries the device
#: user's chat verbatim, so the tag is broken up wherever it appears (any case, spaces inside the brackets).
_SN_CODE_TAG = re.compile(r"\[(\s*/?\s*code\s*)\]", re.IGNORECASE)


def sn_journal_text(text: str) -> str:
    """Text for a ServiceNow journal field: ``[code]`` → ``(code)``, so none of it is rendered as HTML."""
    return _SN_CODE_TAG.sub(r"(\1)", text)


def adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document Format document: one paragraph per non-empty line."""
    paragraphs = [{"type": "paragraph", "content": [{"type": "text", "text": line}]}
                  for line in text.splitlines() if line.strip()]
    return {"type": "doc", "version": 1, "content": paragraphs}


class Jira(_Base):
    can_find_notes = True

    def _auth(self) -> dict[str, str]:
        return self._basic(str(self.spec.settings.get("username", "")))

    async def create(self, ticket: NewTicket) -> TicketRef:
        fields: dict[str, Any] = {
            "project": {"key": str(self.spec.settings.get("project_key", ""))},
            "issuetype": {"name": str(self.spec.settings.get("issue_type") or "Task")},
            "summary": ticket.summary[:250], "description": adf(_description(ticket)),
            "priority": {"name": JIRA_PRIORITY.get(ticket.urgency, "Medium")},
            "labels": ["helpline"]}
        answer = await self._call("POST", "/rest/api/3/issue", "create issue", {"fields": fields})
        key = answer.get("key") if isinstance(answer, dict) else None
        if not isinstance(key, str) or not re.match(KEY_PATTERN, key):
            raise TicketError("Jira answered without an issue key", definite=False)
        return TicketRef(key, key, f"{self.base}/browse/{key}")

    async def find(self, key: str) -> TicketRef:
        answer = await self._call("GET", f"/rest/api/3/issue/{quote(key, safe='')}?fields=summary", f"find {key}")
        found = answer.get("key") if isinstance(answer, dict) else None
        if not isinstance(found, str) or not re.match(KEY_PATTERN, found):
            raise TicketError(f"{self.spec.name}: unexpected answer for {key}", definite=False)
        return TicketRef(found, found, f"{self.base}/browse/{found}")

    async def add_note(self, ref: TicketRef, note: Note) -> str:
        answer = await self._call("POST", f"/rest/api/3/issue/{quote(ref.remote_id, safe='')}/comment",
                                  f"comment on {ref.key}", {"body": adf(note.text)})
        comment_id = answer.get("id") if isinstance(answer, dict) else None
        if comment_id is None:
            raise TicketError("Jira answered without a comment id", definite=False)
        return str(comment_id)

    async def find_note(self, ref: TicketRef, marker: str) -> str | None:
        answer = await self._call("GET", f"/rest/api/3/issue/{quote(ref.remote_id, safe='')}/comment"
                                  "?startAt=0&maxResults=100&orderBy=-created", f"list comments of {ref.key}")
        comments = answer.get("comments") if isinstance(answer, dict) else None
        if not isinstance(comments, list):
            raise TicketError("comment list: unexpected answer", definite=False)
        for comment in comments:
            if isinstance(comment, dict) and marker in json.dumps(comment.get("body")):
                return str(comment.get("id"))
        return None


class Webhook(_Base):
    can_find_notes = False

    def _auth(self) -> dict[str, str]:
        return {}

    async def _post(self, payload: dict[str, Any], what: str) -> Any:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {webhook.SIGNATURE_HEADER: webhook.sign(self.spec.secret.encode(), body, int(time.time())),
                   webhook.IDEMPOTENCY_HEADER: str(payload["idempotency_key"])}
        return await call(self.http, "POST", self.spec.url, ssl_context=self.ssl, headers=headers, data=body,
                          what=f"{self.spec.name}: {what}")

    async def create(self, ticket: NewTicket) -> TicketRef:
        answer = await self._post({"event": "ticket.create", "idempotency_key": ticket.idempotency_key,
                                   "ticket": {"summary": ticket.summary, "details": ticket.details,
                                              "device": ticket.device, "requester": ticket.requester,
                                              "urgency": ticket.urgency,
                                              "priority": WEBHOOK_PRIORITY.get(ticket.urgency, 3),
                                              "request_id": ticket.request_id,
                                              "request_number": ticket.request_number}}, "create ticket")
        key = answer.get("key") if isinstance(answer, dict) else None
        url = answer.get("url") if isinstance(answer, dict) else None
        if not isinstance(key, str) or not re.match(KEY_PATTERN, key):
            key = f"HL-{ticket.request_number}"
        return TicketRef(key, key, url if isinstance(url, str) and url.startswith("https://") else "")

    async def find(self, key: str) -> TicketRef:
        return TicketRef(key, key, "")

    async def add_note(self, ref: TicketRef, note: Note) -> str:
        key = note.marker.rsplit(":", 1)[-1]
        answer = await self._post({"event": "session.writeback", "idempotency_key": key, "ticket": ref.key,
                                   "note": note.text, "session": note.facts}, f"write-back to {ref.key}")
        note_id = answer.get("id") if isinstance(answer, dict) else None
        return str(note_id) if isinstance(note_id, (str, int)) else key

    async def find_note(self, ref: TicketRef, marker: str) -> str | None:
        raise TicketError("a webhook cannot be asked what it has", permanent=True)


def _description(ticket: NewTicket) -> str:
    return "\n".join([ticket.details or ticket.summary, "",
                      f"Device: {ticket.device}", f"Requester: {ticket.requester or '—'}",
                      f"Urgency: {ticket.urgency}",
                      f"Helpline request #{ticket.request_number} ({ticket.request_id})"])
