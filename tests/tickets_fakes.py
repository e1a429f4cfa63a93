"""Local stand-ins for ServiceNow's Table API, Jira's REST v3 and a webhook receiver (issue 19 tests).

Each implements the request and response shapes the connectors rely on, as documented by the
vendors: ServiceNow ``{"result": …}`` answers and ``{"error": {"message", "detail"}, "status":
"failure"}`` errors; Jira's ``{"id", "key", "self"}`` and ``{"errorMessages": [...], "errors":
{...}}``; both answer 429 with ``Retry-After`` when told to. They run over real TLS with a
certificate from a test CA (``ca_pem``), so the connectors' CA-bundle option is exercised.
A ``script`` list of canned failures is consumed one per matching request before normal service.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from server.tickets import webhook
from tests.harness import make_pki


@dataclass
class Scripted:
    """One canned answer for the next request whose method+path matches ``route`` (a regex)."""

    route: str
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    #: Do the work, then cut the connection instead of answering (an answer lost in flight).
    drop_after: bool = False


@dataclass
class Fake:
    url: str
    ca_pem: str
    user: str
    secret: str
    requests: list[tuple[str, str, float]] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    seen_keys: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)

    def take(self, method: str, path: str) -> Scripted | None:
        for i, item in enumerate(self.script):
            if re.search(item.route, f"{method} {path}"):
                return self.script.pop(i)
        return None


SN_AUTH = {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
           "status": "failure"}
SN_NOT_FOUND = {"error": {"message": "No Record found",
                          "detail": "Record doesn't exist or ACL restricts the record retrieval"}, "status": "failure"}
SN_BUSY = {"error": {"message": "Transaction cancelled", "detail": "maximum execution time exceeded"},
           "status": "failure"}
JIRA_AUTH = {"errorMessages": ["You are not authenticated. Authentication required to perform this operation."],
             "errors": {}}
JIRA_NO_ISSUE = {"errorMessages": ["Issue does not exist or you do not have permission to see it."], "errors": {}}


def _basic_ok(request: web.Request, fake: Fake) -> bool:
    header = request.headers.get("Authorization", "")
    fake.auth_headers.append(header)
    expected = base64.b64encode(f"{fake.user}:{fake.secret}".encode()).decode()
    return header in (f"Basic {expected}", f"Bearer {fake.secret}")


def _tls(directory: Path) -> tuple[ssl.SSLContext, str]:
    pki = make_pki(directory)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    return ctx, (pki / "ca.pem").read_text()


#: Set on a request whose answer is to be lost after the work is done.
DROP: web.RequestKey[bool] = web.RequestKey("drop_after", bool)
#: The running fake of an app (a one-item list, filled once the port is known).
FAKE: web.AppKey[list[Fake]] = web.AppKey("fake", list)


@contextlib.asynccontextmanager
async def _serve(app: web.Application, directory: Path, fake_factory: Any) -> AsyncIterator[Fake]:
    ctx, ca_pem = _tls(directory)
    holder: list[Fake] = []
    app[FAKE] = holder
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake: Fake = fake_factory(f"https://localhost:{port}", ca_pem)
    holder.append(fake)
    try:
        yield fake
    finally:
        await runner.cleanup()


async def _scripted(request: web.Request, fake: Fake) -> web.StreamResponse | None:
    fake.requests.append((request.method, request.path_qs, time.monotonic()))
    item = fake.take(request.method, request.path)
    if item is None or item.drop_after:
        if item is not None:
            request[DROP] = True
        return None
    return web.json_response(item.body, status=item.status, headers=item.headers)


def _drop_if_asked(request: web.Request) -> None:
    if request.get(DROP):
        assert request.transport is not None
        request.transport.close()
        raise ConnectionResetError("answer dropped on purpose")


@contextlib.asynccontextmanager
async def servicenow(directory: Path, user: str = "helpline.int", secret: str = "sn-Pa55-w0rd-7f3a") -> AsyncIterator[Fake]:
    """ServiceNow's Table API for incidents and the work-notes journal."""
    app = web.Application()

    async def handle(request: web.Request) -> web.StreamResponse:
        fake = request.app[FAKE][0]
        if not _basic_ok(request, fake):
            fake.requests.append((request.method, request.path_qs, time.monotonic()))
            return web.json_response(SN_AUTH, status=401)
        canned = await _scripted(request, fake)
        if canned is not None:
            return canned
        path, method = request.path, request.method
        query = parse_qs(request.query_string)
        if method == "POST" and path == "/api/now/table/incident":
            body = await request.json()
            if not body.get("short_description"):
                return web.json_response({"error": {"message": "Data Policy Exception",
                                                    "detail": "Short description is mandatory"},
                                          "status": "failure"}, status=403)
            sys_id = secrets.token_hex(16)
            number = f"INC{len(fake.incidents) + 10001:07d}"
            fake.incidents[sys_id] = {**body, "sys_id": sys_id, "number": number}
            return web.json_response({"result": {"sys_id": sys_id, "number": number}}, status=201)
        if method == "GET" and path == "/api/now/table/incident":
            wanted = query.get("sysparm_query", [""])[0].removeprefix("number=")
            found = [{"sys_id": i["sys_id"], "number": i["number"]} for i in fake.incidents.values()
                     if i["number"] == wanted]
            return web.json_response({"result": found[:1]})
        match = re.fullmatch(r"/api/now/table/incident/([0-9a-f]{32})", path)
        if match:
            incident = fake.incidents.get(match.group(1))
            if incident is None:
                return web.json_response(SN_NOT_FOUND, status=404)
            if method == "PATCH":
                body = await request.json()
                if body.get("work_notes"):
                    fake.journal.append({"sys_id": secrets.token_hex(16), "element_id": incident["sys_id"],
                                         "element": "work_notes", "value": body["work_notes"]})
                _drop_if_asked(request)
            return web.json_response({"result": {"sys_id": incident["sys_id"], "number": incident["number"]}})
        if method == "GET" and path == "/api/now/table/sys_journal_field":
            terms: dict[str, str] = {}
            for term in query.get("sysparm_query", [""])[0].split("^"):
                name, value = term.split("=", 1) if "=" in term else (term[:9], term[9:])  # valueLIKE…
                terms[name] = value
            like = terms.get("valueLIKE", "")
            hits = [{"sys_id": j["sys_id"]} for j in fake.journal if j["element_id"] == terms.get("element_id")
                    and j["element"] == terms.get("element") and like in j["value"]]
            return web.json_response({"result": hits[:1]})
        return web.json_response({"error": {"message": "Invalid path", "detail": path}, "status": "failure"},
                                 status=400)

    app.router.add_route("*", "/{tail:.*}", handle)
    async with _serve(app, directory, lambda url, ca: Fake(url, ca, user, secret)) as fake:
        yield fake


@contextlib.asynccontextmanager
async def jira(directory: Path, user: str = "ops@example.org", secret: str = "ATATT3xJiraToken0042") -> AsyncIterator[Fake]:
    """Jira Cloud REST v3: issues, comments, their error bodies."""
    app = web.Application()

    async def handle(request: web.Request) -> web.StreamResponse:
        fake = request.app[FAKE][0]
        if not _basic_ok(request, fake):
            fake.requests.append((request.method, request.path_qs, time.monotonic()))
            return web.json_response(JIRA_AUTH, status=401)
        canned = await _scripted(request, fake)
        if canned is not None:
            return canned
        path, method = request.path, request.method
        if method == "POST" and path == "/rest/api/3/issue":
            fields = (await request.json()).get("fields", {})
            if not fields.get("summary"):
                return web.json_response({"errorMessages": [],
                                          "errors": {"summary": "You must specify a summary of the issue."}},
                                         status=400)
            key = f"{fields['project']['key']}-{len(fake.issues) + 1}"
            fake.issues[key] = fields
            fake.comments[key] = []
            return web.json_response({"id": str(10000 + len(fake.issues)), "key": key,
                                      "self": f"{fake.url}/rest/api/3/issue/{key}"}, status=201)
        match = re.fullmatch(r"/rest/api/3/issue/([A-Z0-9_]+-\d+)(/comment)?", path)
        if match:
            key = match.group(1)
            if key not in fake.issues:
                return web.json_response(JIRA_NO_ISSUE, status=404)
            if match.group(2) and method == "POST":
                comment = {"id": str(20000 + sum(len(c) for c in fake.comments.values())),
                           "body": (await request.json())["body"]}
                fake.comments[key].append(comment)
                _drop_if_asked(request)
                return web.json_response(comment, status=201)
            if match.group(2):
                listed = fake.comments[key]
                return web.json_response({"startAt": 0, "maxResults": 100, "total": len(listed), "comments": listed})
            return web.json_response({"id": "1", "key": key, "fields": {"summary": fake.issues[key]["summary"]}})
        return web.json_response({"errorMessages": [f"no route {path}"], "errors": {}}, status=404)

    app.router.add_route("*", "/{tail:.*}", handle)
    async with _serve(app, directory, lambda url, ca: Fake(url, ca, user, secret)) as fake:
        yield fake


@contextlib.asynccontextmanager
async def receiver(directory: Path, secret: str = "whsec-4c1d-hmac-key") -> AsyncIterator[Fake]:
    """A webhook receiver that verifies the signature and drops repeated idempotency keys, as documented."""
    app = web.Application()

    async def handle(request: web.Request) -> web.StreamResponse:
        fake = request.app[FAKE][0]
        canned = await _scripted(request, fake)
        if canned is not None:
            return canned
        raw = await request.read()
        if not webhook.verify(fake.secret.encode(), request.headers.get(webhook.SIGNATURE_HEADER, ""), raw,
                              time.time()):
            fake.refused.append("bad signature")
            return web.json_response({"error": "bad signature"}, status=401)
        key = request.headers.get(webhook.IDEMPOTENCY_HEADER, "")
        if key in fake.seen_keys:
            return web.json_response({"id": key, "duplicate": True})
        fake.seen_keys.add(key)
        payload = json.loads(raw)
        fake.received.append({"payload": payload, "headers": dict(request.headers), "raw": raw})
        if payload["event"] == "ticket.create":
            return web.json_response({"key": f"WH-{len(fake.received)}", "url": f"{fake.url}/t/{len(fake.received)}"})
        return web.json_response({"id": f"note-{len(fake.received)}"})

    app.router.add_route("POST", "/hook", handle)
    async with _serve(app, directory, lambda url, ca: Fake(url + "/hook", ca, "", secret)) as fake:
        yield fake
