"""Schemathesis against the live server: every documented operation, fuzzed with an admin token.

The server is a real ``helpline server`` process with one enrolled, online agent (so device,
session and task paths have real objects to hit). The OpenAPI document is fetched from the
server itself; Schemathesis generates requests from it with a fixed seed and checks every
response: no 5xx, status codes, content types and bodies as documented.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fixed_seed
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import ignored_auth, positive_data_acceptance

from tests.procs import free_port, helpline, spawn, wait_for, wait_for_port

#: Operations whose effects would end the run early (logging the token's own user out) or that
#: need a live websocket upgrade; everything else is fuzzed.
SKIPPED = {("POST", "/api/v1/auth/logout"), ("GET", "/api/v1/sessions/{session_id}/stream")}


@dataclass
class LiveServer:
    base_url: str
    ca: Path
    token: str
    device_id: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    data = tmp / "data"
    helpline("certs", "init", "--dir", str(data / "pki"), "--server-name", "localhost", "--discard-root")
    agent_port, console_port = free_port(), free_port()
    config = tmp / "helpline.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\nhost = "127.0.0.1"\n')
    env = {"HELPLINE_AGENT_PORT": str(agent_port), "HELPLINE_CONSOLE_PORT": str(console_port)}
    with spawn("server", "--config", str(config), log=tmp / "server.log", env=env) as server:
        wait_for_port(console_port, server)
        words = helpline("admin", "token", "create", "--group", "lab", "--config", str(config), env=env).stdout.split()
        url, token, fingerprint = words[3], words[4], words[6]
        state = tmp / "agent"
        helpline("agent", "enroll", url, token, "--ca-sha256", fingerprint, "--state", str(state))
        device_id = json.loads((state / "agent.json").read_text())["device_id"]
        helpline("admin", "user", "create", "fuzzadmin", "--role", "admin", "--group", "*", "--generate-password",
                 "--config", str(config), env=env)
        api_token = helpline("admin", "user", "token", "fuzzadmin", "--config", str(config),
                             env=env).stdout.strip().splitlines()[-1]
        with spawn("agent", "run", "--state", str(state), log=tmp / "agent.log"):

            def online() -> bool:
                rows = json.loads(helpline("admin", "device", "list", "--json", "--config", str(config)).stdout)
                return any(r["id"] == device_id and r["status"] == "online" for r in rows)

            wait_for(online, timeout=30, what="agent online")
            yield LiveServer(f"https://localhost:{console_port}", data / "pki" / "ca.pem", api_token, device_id)
    log = (tmp / "server.log").read_text()
    assert "Traceback" not in log, f"the server logged a traceback while fuzzed:\n{log[-4000:]}"


@pytest.fixture(scope="module")
def api_schema(live: LiveServer) -> schemathesis.BaseSchema:
    context = ssl.create_default_context(cafile=str(live.ca))
    with urllib.request.urlopen(f"{live.base_url}/api/v1/openapi.json", context=context) as response:
        document = json.load(response)
    schema = schemathesis.openapi.from_dict(document)
    return schema.exclude(func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in SKIPPED)


@pytest.mark.timeout(360)  # every operation of the live server, ~100 s here and growing with the routes
def test_api_conforms_to_its_document(api_schema: schemathesis.BaseSchema, live: LiveServer) -> None:
    """No 5xx and no response outside the OpenAPI document, for every operation, with an admin token
    (a fixed seed: the same requests every run)."""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 40
    only = os.environ.get("HELPLINE_FUZZ_ONLY")  # debugging one operation: a substring of "METHOD /path"
    if only:
        operations = [op for op in operations if only in op.label]
    for operation in operations:
        # Hypothesis sometimes reports "inconsistent data generation" for a schemathesis strategy when it
        # replays an example (FlakyStrategyDefinition): that is the generator's, not the server's, and it
        # hides what happened. Such an operation is run again with the next seed; any other failure counts.
        for seed in (20261128, 20261129, 20261130):
            try:
                _exercise(operation, live, seed)
            except FlakyStrategyDefinition as exc:
                problem: str | None = f"{operation.label}: {exc}"[:2000]
                continue
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure, then report them all
                problem = f"{operation.label}: {exc}"[:2000]
            else:
                problem = None
            break
        if problem is not None:
            failures.append(problem)
    assert not failures, "\n\n".join(failures)


def _exercise(operation: Any, live: LiveServer, seed: int) -> None:
    """One operation, ``max_examples`` generated cases from ``seed``, each called and validated."""

    @fixed_seed(seed)
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def exercise(case: schemathesis.Case) -> None:
        params = case.path_parameters
        # Half the cases name the real device, so its deeper code paths run too.
        if params and "device_id" in params and zlib.crc32(repr(case.query).encode()) % 2 == 0:
            params["device_id"] = live.device_id
        # Left out: ignored_auth (every call deliberately carries a valid admin token, so a generated
        # junk cookie beside it is rightly ignored; 401s are tested in test_api_routes) and
        # positive_data_acceptance (cross-field rules such as "a device or a group" are answered
        # 400 with their code and are not expressible in the schema).
        case.call_and_validate(base_url=live.base_url, headers={"Authorization": f"Bearer {live.token}"},
                               verify=str(live.ca), timeout=15, excluded_checks=[ignored_auth, positive_data_acceptance])

    exercise()
