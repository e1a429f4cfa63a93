"""The screenshots the Get help window offers: one per monitor, and which is shown first (no capture code here,
so a window opened with ``--no-screenshot`` imports nothing of the screen)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shot:
    """One monitor's screenshot (PNG) and how the window names it."""

    png: bytes
    label: str


@dataclass(frozen=True)
class Shots:
    screens: list[Shot]
    #: Index into :attr:`screens` shown first: the monitor with the focused window.
    chosen: int = 0

    @property
    def default(self) -> bytes:
        return self.screens[self.chosen].png if self.screens else b""
