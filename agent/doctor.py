"""``helpline agent doctor``: check an installed agent, one line per check, non-zero exit on a failure.

Each check is a small function of what it inspects (the config path, the state, the clock), so
the report says exactly which part of an installation is wrong and why. The server check opens
a real mutual-TLS connection with the device's certificate but sends a plain ``GET /agent`` (no
websocket upgrade): the server authenticates the certificate against its registry first and
then refuses the missing upgrade, so a 400 proves TLS, the device's certificate and its standing
without opening a second control channel (which would replace the running agent's).
"""

from __future__ import annotations

import enum
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from common.config import ConfigError, load_config
from common.proxy import https_connection

from .config import AgentConfig
from .deployment import Enrollment, load_enrollment
from .state import AgentState

#: Clock skew against the server beyond which TLS validity and signed windows go wrong.
MAX_SKEW_S = 120.0
#: The agent renews at two-thirds of a certificate's life; less than a quarter left means renewal is overdue.
MIN_REMAINING_FRACTION = 0.25
#: Where the package installs the session helper's units.
USER_UNIT = Path("/usr/lib/systemd/user/helpline-session.service")
AUTOSTART = Path("/etc/xdg/autostart/helpline-session.desktop")


class Status(enum.Enum):
    OK = "✓"
    FAIL = "✗"
    INFO = "-"  # reported, never a failure


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status.value} {self.name}: {self.detail}"


@dataclass
class Doctor:
    """Runs the checks in order; later checks use what earlier ones loaded."""

    config_path: Path
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    timeout_s: float = 10.0
    config: AgentConfig | None = None
    enrollment: Enrollment | None = None
    server_date: datetime | None = None

    def run(self) -> list[Check]:
        checks = [self.check_config()]
        state = AgentState((self.config or AgentConfig()).state_dir)
        checks.append(self.check_state_dir(state))
        enrolled = state.is_enrolled()
        checks.append(Check("enrolled", Status.OK if enrolled else Status.FAIL,
                            f"device {state.device_id}" if enrolled else f"no identity in {state.directory}"))
        if enrolled:
            checks += [self.check_tls_pin(state), self.check_trust_root(state), self.check_certificate(state),
                       self.check_server(state)]
        checks += [self.check_clock(state if enrolled else None), self.check_display(), self.check_session_helper()]
        return checks

    # --- the checks -----------------------------------------------------------------------------

    def check_config(self) -> Check:
        try:
            self.config = load_config(AgentConfig, self.config_path, section="agent")
            self.enrollment = load_enrollment(self.config_path)
        except ConfigError as exc:
            return Check("config", Status.FAIL, str(exc))
        where = "with [enrollment]" if self.enrollment else "no [enrollment] table"
        return Check("config", Status.OK, f"{self.config_path} valid ({where})")

    def check_state_dir(self, state: AgentState) -> Check:
        directory = state.directory
        try:
            info = directory.stat()
        except OSError as exc:
            return Check("state directory", Status.FAIL, f"{directory}: {exc.strerror}")
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISDIR(info.st_mode):
            return Check("state directory", Status.FAIL, f"{directory} is not a directory")
        if info.st_uid != os.geteuid():
            return Check("state directory", Status.FAIL, f"{directory} is owned by uid {info.st_uid}, not this user")
        if mode & 0o077:
            return Check("state directory", Status.FAIL, f"{directory} has mode {mode:04o}; want 0700")
        if state.key_path.exists() and stat.S_IMODE(state.key_path.stat().st_mode) & 0o077:
            return Check("state directory", Status.FAIL, f"{state.key_path} is readable by others")
        return Check("state directory", Status.OK, f"{directory} mode {mode:04o}, owner uid {info.st_uid}")

    def check_tls_pin(self, state: AgentState) -> Check:
        from certs.pki import certificate_fingerprint_sha256, load_certificate

        pinned = certificate_fingerprint_sha256(load_certificate(state.ca_path))
        if self.enrollment is not None and self.enrollment.ca_sha256 != pinned:
            return Check("org TLS root", Status.FAIL, f"the state pins {pinned[:16]}…, the config names "
                         f"{self.enrollment.ca_sha256[:16]}…: re-enroll against the deployed root")
        return Check("org TLS root", Status.OK, f"pinned, sha256 {pinned[:16]}…")

    def check_trust_root(self, state: AgentState) -> Check:
        from .authority import PIN_INFO_KEY, parse_pin

        try:
            configured = parse_pin((self.config or AgentConfig()).trust_root_sha256)
            enrolled = parse_pin(str(state.load_info().get(PIN_INFO_KEY) or "") or None)
        except ValueError as exc:
            return Check("trust root", Status.FAIL, str(exc))
        if configured is None and enrolled is None:
            return Check("trust root", Status.FAIL, "no trust_root_sha256 in the config nor from enrollment: "
                         "this device honours no unattended access")
        if configured and enrolled and configured != enrolled:
            return Check("trust root", Status.FAIL, f"the config names {configured[:16]}…, enrollment pinned "
                         f"{enrolled[:16]}… (the config's wins; is it the right one?)")
        pin, source = (configured, "config") if configured else (enrolled, "enrollment")
        return Check("trust root", Status.OK, f"pinned {str(pin)[:16]}… (from {source})")

    def check_certificate(self, state: AgentState) -> Check:
        from certs.errors import CertError
        from certs.pki import check_issued_chain, load_certificate, load_private_key

        try:
            key = load_private_key(state.key_path)
            cert = check_issued_chain(state.cert_path.read_bytes(), load_certificate(state.ca_path),
                                      key.public_key())  # type: ignore[arg-type]
        except (CertError, ValueError, TypeError, OSError) as exc:
            return Check("certificate", Status.FAIL, f"{state.cert_path}: {exc}")
        now = self.now()
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if now >= end:
            from .recovery import describe

            return Check("certificate", Status.FAIL, f"expired on {end:%Y-%m-%d %H:%M} UTC: "
                         + describe(state, (now - end).total_seconds()))
        if now < start:
            return Check("certificate", Status.FAIL, f"not valid before {start:%Y-%m-%d %H:%M} UTC (clock behind?)")
        remaining = (end - now) / (end - start)
        if remaining < MIN_REMAINING_FRACTION:
            return Check("certificate", Status.FAIL, f"expires {end:%Y-%m-%d %H:%M} UTC and renewal is overdue "
                         "(is the agent connecting?)")
        return Check("certificate", Status.OK, f"valid until {end:%Y-%m-%d %H:%M} UTC, matches device.key")

    def check_server(self, state: AgentState) -> Check:
        import ssl

        from certs import tls

        url = urlsplit(state.agent_url)
        host, port = url.hostname or "", url.port or 443
        try:
            context = tls.agent_client_context(state.ca_path, state.cert_path, state.key_path,
                                               server_name=state.agent_server_name)
            conn = https_connection(host, port, context=context, timeout=self.timeout_s,
                                    setting=(self.config or AgentConfig()).proxy)
            try:
                conn.request("GET", url.path or "/agent", headers={"User-Agent": "helpline-doctor"})
                response = conn.getresponse()
                body = response.read(512).decode(errors="replace").strip()
                date = response.getheader("Date")
            finally:
                conn.close()
        except (ssl.SSLError, OSError) as exc:
            return Check("server", Status.FAIL, f"{host}:{port} unreachable over mutual TLS: {exc}")
        if date:
            try:
                self.server_date = parsedate_to_datetime(date)
            except (TypeError, ValueError):
                self.server_date = None
        if response.status in (401, 403):
            return Check("server", Status.FAIL, f"{host}:{port} refused this device: {body[:200]}")
        if response.status != 400:
            return Check("server", Status.FAIL, f"{host}:{port} answered HTTP {response.status}, not the agent "
                         "listener's refusal of a plain request")
        return Check("server", Status.OK, f"{host}:{port} accepted this device's certificate (mutual TLS)")

    def check_clock(self, state: AgentState | None) -> Check:
        now = self.now()
        if self.server_date is not None:
            skew = (now - self.server_date).total_seconds()
            if abs(skew) > MAX_SKEW_S:
                return Check("clock", Status.FAIL, f"{skew:+.0f} s off the server's clock (limit ±{MAX_SKEW_S:.0f} s)")
            return Check("clock", Status.OK, f"{skew:+.0f} s from the server's clock")
        validity = state.certificate_validity() if state is not None else None
        if validity is not None and now.timestamp() < validity[0]:
            return Check("clock", Status.FAIL, "earlier than this device's certificate was issued")
        if now.year < 2024:
            return Check("clock", Status.FAIL, f"reads {now:%Y-%m-%d}: not set")
        return Check("clock", Status.INFO, f"{now:%Y-%m-%d %H:%M} UTC (server's clock not available to compare)")

    def check_display(self) -> Check:
        display = (self.config.display if self.config else None) or os.environ.get("DISPLAY")
        if not display:
            return Check("display", Status.INFO, "none configured for this process (the session helper brings "
                         "each user's own)")
        number = display.rsplit(":", 1)[-1].split(".")[0]
        socket_path = Path(f"/tmp/.X11-unix/X{number}")  # noqa: S108 - the X server's well-known socket
        there = "present" if socket_path.exists() else "absent"
        return Check("display", Status.INFO, f"{display} (X socket {there})")

    def check_session_helper(self) -> Check:
        units = [str(p) for p in (USER_UNIT, AUTOSTART) if p.exists()]
        running = _helper_processes()
        installed = f"installed: {', '.join(units)}" if units else "no user unit or autostart entry installed"
        return Check("session helper", Status.INFO, f"{installed}; {running} running")


def _helper_processes() -> int:
    """Processes whose command line runs ``agent session-helper`` (any user)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"session-helper" in argv and b"agent" in argv:
            count += 1
    return count


def report(checks: list[Check], out: TextIO = sys.stdout) -> int:
    """Print one line per check; 1 if any failed."""
    for check in checks:
        print(check.line(), file=out)
    failed = [c for c in checks if c.status is Status.FAIL]
    print(f"{len(failed)} check(s) failed" if failed else "all checks passed", file=out)
    return 1 if failed else 0
