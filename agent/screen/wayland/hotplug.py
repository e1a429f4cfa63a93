"""Follow monitors plugged in, removed or resized during a session on Mutter's API.

Mutter emits ``org.gnome.Mutter.DisplayConfig.MonitorsChanged`` (several per layout change: the
session's ``layout_changed`` event is set on each); :func:`follow` waits until they stop for
:data:`SETTLE_S` (at most :data:`MAX_DELAY_S` after the first), reads ``GetCurrentState`` again and
makes the viewer's list anew (:func:`relayout`):

- a monitor still there at the same size keeps its stream (a ``RecordMonitor`` stream follows its
  monitor when it moves; an area stays where it was recorded, so a moved area is recorded again);
- a new monitor, or one of a new size, gets a ``RecordArea`` stream over its place, started on the
  running session with its own ``Stream.Start`` — an area, because Mutter closes the whole session when
  a monitor cast with ``RecordMonitor`` goes away, and an area outlives its monitor;
- "all monitors" is recorded again over the new bounding box when that changed;
- a removed monitor leaves the list.

A monitor cast with ``RecordMonitor`` (those there when the session started) that goes away makes Mutter
close the whole session (seen on Mutter 43.8). Then (:func:`renew_or_close`) a new RemoteDesktop session is
started on the same bus with every monitor recorded anew, and its list goes to the cast set the same way;
input goes through the new session (the injector holds the same ``MutterSession``). A ``Closed`` with no
such monitor gone (the person stopped sharing, the compositor is leaving) ends the screen session.

Mutter 43 cannot stop one stream of a session, so a replaced stream stays recorded and unread until
the session ends (unread, it costs Mutter nothing: it paints a cast only for a connected consumer);
:data:`MAX_RECORDED` bounds how many one session records. The new list goes to the cast set
(``stage``), which the screen session applies between two frames: a new ``monitors`` message and,
for the monitor shown, a full frame (agent/screen/session.py ``_follow_layout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

from .casts import CastSet
from .layout import LogicalMonitor, current_layout
from .mutter import MutterError, MutterSession, StreamInfo, monitor_list

log = logging.getLogger(__name__)

#: Quiet time after the last ``MonitorsChanged`` before the layout is read again.
SETTLE_S = 0.25
#: The longest a burst of signals may put the reading off.
MAX_DELAY_S = 2.0
#: Streams one session may record in all (they cannot be stopped before the session ends).
MAX_RECORDED = 64
#: New Mutter sessions started in place of one closed by a monitor's removal, at most, per screen session.
MAX_RENEWALS = 8


async def settle(changed: asyncio.Event) -> None:
    """Return once ``changed`` stayed clear for SETTLE_S (or MAX_DELAY_S passed); it is clear on return."""
    loop = asyncio.get_running_loop()
    until = loop.time() + MAX_DELAY_S
    while True:
        changed.clear()
        remaining = until - loop.time()
        if remaining <= 0:
            return
        try:
            async with asyncio.timeout(min(SETTLE_S, remaining)):
                await changed.wait()
        except TimeoutError:
            return


async def _area(session: MutterSession, m: LogicalMonitor | StreamInfo, name: str, primary: bool
                ) -> tuple[str, StreamInfo]:
    if session.recorded >= MAX_RECORDED:
        raise MutterError(f"{MAX_RECORDED} streams recorded in this session already: the layout is not followed "
                          "further (a new session sees the new layout)")
    path, node = await session.record_area(m.x, m.y, m.w, m.h)
    return path, StreamInfo(node, m.x, m.y, m.w, m.h, primary, name)


async def relayout(session: MutterSession) -> list[StreamInfo] | None:
    """Make the session's list match Mutter's layout now; the new list, or None when nothing changed."""
    layout = await current_layout(session.bus)
    if not layout:
        log.warning("Mutter's DisplayConfig listed no monitors: the monitor list is kept")
        return None
    old = {info.name: (path, info) for path, info in session.casts[1:] if info.name}
    monitors: list[tuple[str, StreamInfo]] = []
    for m in layout:
        kept = old.get(m.connector)
        if kept is not None:
            path, info = kept
            if (info.w, info.h) == (m.w, m.h) and (path in session.following or (info.x, info.y) == (m.x, m.y)):
                monitors.append((path, replace(info, x=m.x, y=m.y, primary=m.primary)))
                continue
        monitors.append(await _area(session, m, m.connector, m.primary))
    if len(monitors) == 1:
        casts = [monitors[0], monitors[0]]
    else:
        union = monitor_list([info for _path, info in monitors])[0]
        path, info = session.casts[0]
        same = (info.x, info.y, info.w, info.h) == (union.x, union.y, union.w, union.h)
        casts = [(path, info) if same and path not in session.following else await _area(session, union, "", False),
                 *monitors]
    if casts == session.casts:
        return None
    session.replace_casts(casts)
    listed = [info for _path, info in casts]
    log.info("Mutter remote desktop: the monitor layout changed: %s",
             ", ".join(f"{s.name if i else 'all'} {s.w}x{s.h} at {s.x},{s.y} (node {s.node_id})"
                       for i, s in enumerate(listed)))
    return listed


async def _either(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def renew_or_close(session: MutterSession) -> list[StreamInfo] | None:
    """Mutter closed the session: renew it when a monitor it cast with ``RecordMonitor`` is gone from the layout
    (Mutter 43.8 closes the whole session then), else — or if that fails — the session is closed for good."""
    changed = session.layout_changed
    with contextlib.suppress(TimeoutError):  # the MonitorsChanged of that removal comes right after the Closed
        async with asyncio.timeout(SETTLE_S):
            await changed.wait()
    if changed.is_set():
        await settle(changed)
    try:
        present = {m.connector for m in await current_layout(session.bus)}
        cast = {info.name for path, info in session.casts if path in session.following}
        if not present or cast <= present:
            log.info("Mutter closed the remote-desktop session, no monitor of it removed: the session ends")
        elif session.renewals >= MAX_RENEWALS or session.recorded >= MAX_RECORDED:
            log.warning("Mutter closed the remote-desktop session again (a monitor was removed): the session ends")
        else:
            log.info("Mutter closed the remote-desktop session as %s went away: starting a new one",
                     ", ".join(sorted(cast - present)))
            await session.renew()
            return [info for _path, info in session.casts]
    except (MutterError, TimeoutError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        log.warning("Mutter remote desktop: no new session after a monitor was removed: %s", exc)
    session.closed.set()
    return None


async def follow(session: MutterSession, capture: CastSet) -> None:
    """For the session's lifetime: on each settled layout change, stage the new list in ``capture``; when Mutter
    closes the session because a monitor went away, renew it and stage the new session's list."""
    session.renewable = True
    try:
        await _follow(session, capture)
    finally:
        session.renewable = False
        if session.lost.is_set():  # cancelled while renewing: what was lost is closed
            session.closed.set()


async def _follow(session: MutterSession, capture: CastSet) -> None:
    while not session.closed.is_set():
        await _either(session.layout_changed, session.lost, session.closed)
        if session.closed.is_set():
            return
        if session.lost.is_set():
            listed = await renew_or_close(session)
            if listed is not None:
                capture.stage(listed, fresh=True)
            continue
        await settle(session.layout_changed)
        if session.closed.is_set() or session.lost.is_set():
            continue
        try:
            listed = await relayout(session)
        except (MutterError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            log.warning("Mutter remote desktop: the new monitor layout is not followed: %s", exc)
            continue
        if listed is not None:
            capture.stage(listed)
