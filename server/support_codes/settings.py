"""``[server.support_codes]``: code length, lives, caps and redeem rate limits — and the guessing bound.

The bound (README "Support codes"): a code is uniform over ``10**digits`` values. Any redeem
attempt carries one guess and counts against the global limit, which no window of
``window_s`` may exceed (:class:`server.accounts.ratelimit.SlidingWindow`). A code lives at most
``max_ttl_min`` minutes, so the guesses that can meet it number at most
``G = global_per_window * (ceil(max_ttl / window) + 1)`` per server node (the +1: a closed
interval meets one more window), times ``nodes``. At most ``max_live`` codes are live at once,
so one guess hits *some* live code with probability at most ``max_live / 10**digits``, and by
the union bound ``P(any guess hits a live code during its life) <= G * max_live / 10**digits``.
:func:`guess_bound` computes it; :meth:`SupportCodeSettings.from_config` refuses (the server
does not start) any configuration whose bound is not below :data:`MAX_GUESS_PROBABILITY`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from common.config import ConfigError

#: The issue's requirement: guessing a live code during its life stays below one in a million.
MAX_GUESS_PROBABILITY = 1e-6
#: The brief's ceiling on a code's life.
HARD_MAX_TTL_MIN = 30


@dataclass(frozen=True)
class SupportCodeSettings:
    #: Digits per code (read aloud in groups of three: "482 193 775 031").
    digits: int = 12
    #: A new code's life unless the technician asks for less (or more, up to ``max_ttl_min``).
    default_ttl_min: int = 10
    max_ttl_min: int = 30
    #: Codes live (not used, revoked or expired) at once, over all technicians.
    max_live: int = 100
    #: Redeem attempts per source address, and from everywhere, per window (per server node).
    per_address_per_window: int = 10
    global_per_window: int = 60
    window_s: float = 60.0
    #: Server nodes sharing the database: each counts its own attempts, so the bound multiplies.
    nodes: int = 1
    #: How long a redeemed client may wait for its technician to connect.
    wait_min: int = 15

    @classmethod
    def from_config(cls, table: Any) -> SupportCodeSettings:
        """Build from the ``[server.support_codes]`` table; ConfigError for unknown keys, bad values or a weak bound."""
        if table is None or table == "":
            table = {}
        if not isinstance(table, dict):
            raise ConfigError("support_codes: must be a TOML table ([server.support_codes])")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"support_codes: unknown keys: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, raw in table.items():
            try:
                values[name] = float(raw) if name == "window_s" else int(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"support_codes.{name}: {raw!r} is not a number") from exc
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """ConfigError unless every value is in range and the guessing bound holds."""
        if not 9 <= self.digits <= 18:
            raise ConfigError("support_codes.digits: between 9 and 18")
        if not 1 <= self.max_ttl_min <= HARD_MAX_TTL_MIN:
            raise ConfigError(f"support_codes.max_ttl_min: between 1 and {HARD_MAX_TTL_MIN}")
        if not 1 <= self.default_ttl_min <= self.max_ttl_min:
            raise ConfigError("support_codes.default_ttl_min: between 1 and max_ttl_min")
        for name in ("max_live", "per_address_per_window", "global_per_window", "nodes", "wait_min"):
            if getattr(self, name) < 1:
                raise ConfigError(f"support_codes.{name}: at least 1")
        if self.window_s <= 0:
            raise ConfigError("support_codes.window_s: positive")
        bound = guess_bound(self)
        if bound >= MAX_GUESS_PROBABILITY:
            raise ConfigError(
                f"support_codes: P(a guess hits a live code during its life) <= {bound:.3g}, not below "
                f"{MAX_GUESS_PROBABILITY:g} ({guess_arithmetic(self)}); use more digits, fewer live codes, "
                "a shorter life or a lower global limit")

    @property
    def code_space(self) -> int:
        return int(10 ** self.digits)


def guesses_per_life(settings: SupportCodeSettings) -> int:
    """The most redeem attempts all nodes can accept while one code lives."""
    windows = math.ceil(settings.max_ttl_min * 60 / settings.window_s) + 1
    return settings.global_per_window * windows * settings.nodes


def guess_bound(settings: SupportCodeSettings) -> float:
    """Union bound on P(any guess hits a live code during its life): guesses x live codes / code space."""
    return guesses_per_life(settings) * settings.max_live / settings.code_space


def guess_arithmetic(settings: SupportCodeSettings) -> str:
    """The bound written out, for the error message, the log and the README."""
    windows = math.ceil(settings.max_ttl_min * 60 / settings.window_s) + 1
    return (f"{settings.global_per_window} attempts/{settings.window_s:g} s x {windows} windows x "
            f"{settings.nodes} node(s) = {guesses_per_life(settings)} guesses; x {settings.max_live} live codes "
            f"/ 10^{settings.digits} = {guess_bound(settings):.3g}")
