"""The monitor layout of a GNOME desktop, as Mutter's ``org.gnome.Mutter.DisplayConfig`` describes it now.

``GetCurrentState`` answers ``(serial, monitors, logical_monitors, properties)``. A logical monitor is
``(x, y, scale, transform, primary, [(connector, vendor, product, serial)], properties)`` — mirrored
monitors share one, and its first connector names it; its size is the current mode of that connector
(``monitors``: ``((connector, …), [(id, w, h, refresh, preferred scale, scales, {"is-current": b})], …)``),
turned by a 90°/270° transform and divided by the scale in the logical layout mode (Mutter's default;
``layout-mode`` 2 = physical keeps pixels). Only scale 1 was tried (headless Mutter 43.8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dbus_fast.aio import MessageBus

from .mutter import DC_NAME, DC_PATH, MAX_CAST_MONITORS, _call

#: ``layout-mode`` of the state's properties: sizes in physical pixels (else logical ones).
PHYSICAL_LAYOUT = 2
#: The largest monitor side believed (32K): a bound on what a confused answer could make us record.
MAX_SIDE = 32768


@dataclass(frozen=True, slots=True)
class LogicalMonitor:
    """One monitor of the layout: its connector and its place and size in layout coordinates."""

    connector: str
    x: int
    y: int
    w: int
    h: int
    primary: bool


def _value(v: Any) -> Any:
    return getattr(v, "value", v)  # a dbus-fast Variant, or the plain value


def _current_sizes(monitors: Sequence[Any]) -> dict[str, tuple[int, int]]:
    sizes: dict[str, tuple[int, int]] = {}
    for spec, modes, _props in monitors:
        for mode in modes:
            if bool(_value(mode[6].get("is-current", False))):
                sizes[str(spec[0])] = (int(mode[1]), int(mode[2]))
    return sizes


def parse_state(state: Sequence[Any]) -> list[LogicalMonitor]:
    """The monitors of a ``GetCurrentState`` answer: the primary first, then left to right and top to bottom
    (the order the session's first list has); those without a current mode or with an absurd size left out."""
    _serial, monitors, logical, props = state
    sizes = _current_sizes(monitors)
    physical = int(_value(props.get("layout-mode", 1))) == PHYSICAL_LAYOUT
    found: list[LogicalMonitor] = []
    for x, y, scale, transform, primary, connectors, _lm_props in logical:
        if not connectors or str(connectors[0][0]) not in sizes:
            continue
        w, h = sizes[str(connectors[0][0])]
        if int(transform) % 2:  # 90° and 270°, flipped or not
            w, h = h, w
        if not physical and float(scale) > 0:
            w, h = round(w / float(scale)), round(h / float(scale))
        if 0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE:
            found.append(LogicalMonitor(str(connectors[0][0]), int(x), int(y), w, h, bool(primary)))
    found.sort(key=lambda m: (not m.primary, m.x, m.y))
    return found[:MAX_CAST_MONITORS]


async def current_layout(bus: MessageBus) -> list[LogicalMonitor]:
    """The layout now (MutterError when Mutter does not answer; ValueError … on an answer of another shape)."""
    return parse_state(await _call(bus, DC_NAME, DC_PATH, DC_NAME, "GetCurrentState"))
