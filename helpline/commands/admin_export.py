"""``helpline admin export`` (GLPI / ServiceNow IRE files) and ``helpline admin cmdb …``
(push to ServiceNow, alert rules, alert webhook)."""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .common import add_server_options, server_config, with_database

if TYPE_CHECKING:
    from server.store import Database

#: Export formats (the converters are imported when an export runs).
FORMATS = ("glpi", "servicenow")


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser("export", help="export the CMDB as GLPI inventory or ServiceNow IRE payloads",
                            description="One document per device: a JSON object with --device, else a JSON array.")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--device", help="only this device id")
    export.add_argument("--out", type=Path, help="write here instead of standard output")
    add_server_options(export)
    export.set_defaults(handler=_export)

    cmdb = sub.add_parser("cmdb", help="CMDB: push to ServiceNow, alert rules, alert webhook")
    cmdb_sub = cmdb.add_subparsers(dest="cmdb_command", metavar="ACTION", required=True)
    push = cmdb_sub.add_parser("push", help="push inventories to an external CMDB")
    push.add_argument("target", choices=["servicenow"])
    push.add_argument("--instance", required=True, help="instance URL, e.g. https://acme.service-now.com")
    push.add_argument("--user", help="ServiceNow user (basic auth)")
    push.add_argument("--password-env", default="HELPLINE_SERVICENOW_PASSWORD", metavar="VAR",
                      help="environment variable holding the password (default %(default)s)")
    push.add_argument("--device", help="only this device id")
    add_server_options(push)
    push.set_defaults(handler=_push)

    rules = cmdb_sub.add_parser("alert-rule", help="show or change alert rules",
                                description="Without arguments: print every rule. With RULE FIELD=VALUE…: change it "
                                "(e.g. 'disk_free warning_below=15', 'cpu_high enabled=false').")
    rules.add_argument("rule", nargs="?")
    rules.add_argument("values", nargs="*", metavar="FIELD=VALUE")
    add_server_options(rules)
    rules.set_defaults(handler=_rules)

    hook = cmdb_sub.add_parser("webhook", help="show or set the alert webhook (JSON POST with retries)")
    hook.add_argument("--url", help="receiver URL; empty string disables")
    hook.add_argument("--max-attempts", type=int)
    hook.add_argument("--backoff", type=float, help="first retry delay in seconds (doubles each time)")
    add_server_options(hook)
    hook.set_defaults(handler=_webhook)


async def load_inventories(db: Database, device_id: str | None) -> list[tuple[str, dict[str, Any]]]:
    from server.cmdb import inventory_store

    if device_id:
        ids = [device_id]
    else:
        ids = [r["device_id"] for r in await db.fetchall(
            "SELECT DISTINCT device_id FROM inventory_sections ORDER BY device_id")]
    return [(d, await inventory_store.get_inventory(db, d)) for d in ids]


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _export(args: argparse.Namespace) -> int:
    from server import audit
    from server.exports import FleetExport, export_fleet
    from server.exports.glpi import to_glpi_inventory
    from server.exports.servicenow_relations import ire_converter

    async def work(db: Database) -> FleetExport:
        found = await load_inventories(db, args.device)
        convert = to_glpi_inventory if args.format == "glpi" else await ire_converter(db)  # + cmdb_rel_ci
        result = export_fleet(found, convert)
        await audit.append(db, _actor(), "cmdb.export", args.device or "*", {
            "format": args.format, "devices": len(result.documents), "skipped": [s.device_id for s in result.skipped]})
        return result

    result = with_database(server_config(args), work)
    for skipped in result.skipped:  # one bad stored device never fails the others
        print(f"helpline: skipped device {skipped.device_id}: {skipped.reason}", file=sys.stderr)
    docs = [doc for _device, doc in result.documents]
    if args.device and not docs:
        print(f"helpline: no inventory for device {args.device}", file=sys.stderr)
        return 1
    text = json.dumps(docs[0] if args.device else docs, indent=2, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {len(docs)} {args.format} document(s) to {args.out}")
    else:
        print(text)
    return 0


def _check_instance(url: str) -> str:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("the instance URL must be https:// (plain http only to loopback, for testing)")
    return url.rstrip("/")


async def push_servicenow(db: Database, instance: str, auth: str | None, device_id: str | None
                          ) -> tuple[int, list[str]]:
    """POST one IRE payload per device; return (devices pushed, problems) — per-item errors included."""
    import aiohttp

    from server import audit
    from server.exports import export_fleet
    from server.exports.servicenow import IreResponseError, parse_ire_response
    from server.exports.servicenow_relations import ire_converter

    endpoint = f"{instance}/api/now/identifyreconcile"
    fleet = export_fleet(await load_inventories(db, device_id), await ire_converter(db))
    problems = [f"{s.device_id}: skipped: {s.reason}" for s in fleet.skipped]
    found = fleet.documents
    headers = {"Authorization": auth} if auth else {}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as session:
        for dev, payload in found:
            try:
                async with session.post(endpoint, json=payload) as resp:
                    if resp.status != 200:
                        problems.append(f"{dev}: HTTP {resp.status}: {(await resp.text())[:200]}")
                        continue
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problems.append(f"{dev}: {type(exc).__name__}: {exc}")
                continue
            try:
                results = parse_ire_response(body)
            except IreResponseError as exc:
                problems.append(f"{dev}: unexpected IRE response: {exc}")
                continue
            for item in results:
                for error in item.errors:
                    problems.append(f"{dev}: item {item.index} ({item.class_name}): {error.error}: {error.message}")
    await audit.append(db, _actor(), "cmdb.push.servicenow", instance,
                       {"devices": len(found), "problems": len(problems)})
    return len(found), problems


def _push(args: argparse.Namespace) -> int:
    try:
        instance = _check_instance(args.instance)
    except ValueError as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return 2
    auth = None
    if args.user:
        password = os.environ.get(args.password_env)
        if password is None:
            print(f"helpline: set the password in ${args.password_env}", file=sys.stderr)
            return 2
        token = base64.b64encode(f"{args.user}:{password}".encode()).decode()
        auth = f"Basic {token}"
    pushed, problems = with_database(server_config(args),
                                     lambda db: push_servicenow(db, instance, auth, args.device))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"pushed {pushed} device(s) to {instance}: {len(problems)} error(s)")
    return 1 if problems else 0


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _rules(args: argparse.Namespace) -> int:
    from server import audit
    from server.cmdb import settings

    async def work(db: Database) -> dict[str, Any]:
        if args.rule and args.values:
            values = {}
            for item in args.values:
                key, sep, raw = item.partition("=")
                if not sep:
                    raise ValueError(f"{item!r} is not FIELD=VALUE")
                values[key] = _parse_value(raw)
            updated = await settings.set_rule(db, args.rule, values)
            await audit.append(db, _actor(), "cmdb.alert_rule.set", args.rule, values)
            return {args.rule: updated}
        rules = await settings.alert_rules(db)
        return {args.rule: rules[args.rule]} if args.rule in rules else rules

    try:
        print(json.dumps(with_database(server_config(args), work), indent=2))
    except (ValueError, KeyError) as exc:
        print(f"helpline: {exc}", file=sys.stderr)
        return 2
    return 0


def _webhook(args: argparse.Namespace) -> int:
    from server import audit
    from server.cmdb import settings

    async def work(db: Database) -> dict[str, Any]:
        changes = {k: v for k, v in (("url", args.url), ("max_attempts", args.max_attempts),
                                     ("backoff_s", args.backoff)) if v is not None}
        if changes:
            await audit.append(db, _actor(), "cmdb.webhook.set", "webhook", changes)
            return await settings.set_webhook(db, **changes)
        return await settings.webhook(db)

    print(json.dumps(with_database(server_config(args), work), indent=2))
    return 0
