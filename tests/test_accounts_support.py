"""Helpers for the accounts and console tests (no tests here): users, logins, HTTPS clients."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pyotp

from certs import tls
from server.accounts import admin
from server.app import HelplineServer
from server.auth.rights import Right
from tests.harness import console_url


@dataclass
class Account:
    username: str
    password: str
    totp_secret: str
    user_id: str

    def code(self, offset_steps: int = 0) -> str:
        return pyotp.TOTP(self.totp_secret).at(int(time.time()) + 30 * offset_steps)


async def make_user(server: HelplineServer, username: str, role: str, *, groups: dict[str, Right | None] | None = None
                    ) -> Account:
    created = await admin.create_account(server.db, username, role, actor="test", password=f"pw-{username}-0123456789")
    for group, rights in (groups or {}).items():
        if group != "*":
            await admin.create_group(server.db, group, actor="test")
        await admin.assign_rights(server.db, created.user.id, group, rights, actor="test")
    return Account(username, created.password, created.totp_secret, created.user.id)


def ssl_context(server: HelplineServer) -> Any:
    return tls.agent_client_context(server.pki.ca_pem, None, None)


def client(server: HelplineServer, **headers: str) -> aiohttp.ClientSession:
    """An HTTPS client trusting the org CA (verification on), with its own cookie jar."""
    return aiohttp.ClientSession(base_url=console_url(server), connector=aiohttp.TCPConnector(ssl=ssl_context(server)),
                                 cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)


@dataclass
class Login:
    status: int
    body: dict[str, Any]
    set_cookie: str

    @property
    def csrf(self) -> str:
        return str(self.body["csrf_token"])


async def login(http: aiohttp.ClientSession, account: Account, *, code: str | None = None,
                password: str | None = None) -> Login:
    payload = {"username": account.username, "password": password or account.password,
               "totp": account.code() if code is None else code}
    async with http.post("/api/v1/auth/login", json=payload) as resp:
        return Login(resp.status, await resp.json(), resp.headers.get("Set-Cookie", ""))


def cookie_value(set_cookie: str) -> str:
    match = re.search(r"__Host-helpline=([^;]+)", set_cookie)
    assert match, set_cookie
    return match.group(1)
