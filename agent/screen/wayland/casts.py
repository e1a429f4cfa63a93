"""The monitors of a Wayland session as one grabber: every monitor listed, only the one shown read.

Mutter's API (and the portal, for the monitors the person shared) gives one PipeWire stream
per monitor, recorded when the session starts. :class:`CastSet` lists them to the viewer as
X11 does (index 0 = all monitors, then each, in the desktop's layout coordinates) and reads
only the stream of the monitor the viewer shows: a reader child (helpline-pwcast, native.py, or
``gst-launch``, frames.py) per shown monitor.
When the viewer picks another monitor the session's next grab asks for its index; the set then
kills the old child by PID and starts a reader on the other stream (a few hundred ms until its
first frame on the headless Mutter), and forwards that reader's damage reports from then on.
Grabs come from the session's one capture thread; the set's lock orders a switch against
``close`` (from another thread), so no reader is started after the set closed. The damage
notifications come from the readers' threads and go to whichever reader is current.

"All monitors" (index 0) is one stream where the desktop can paint one (Mutter's ``RecordArea``
over the monitors' bounding box); where it cannot (the portal shares monitors, not areas) its
entry has node 0 and :class:`Mosaic` reads every monitor's stream at once and pastes the
newest frame of each at its place in the bounding box (the gaps black, as Mutter paints them).

The list can change during a session (Mutter's API: hotplug.py): the new one is staged (``stage``) from the
event loop and taken by the screen session between two frames (``apply_layout``), which keeps reading
the same stream when the monitor shown is still there unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from ..capture import Frame, Monitor
from ..damage import Damage
from ..tiles import Rect
from .frames import PipeWireCapture
from .mutter import StreamInfo

log = logging.getLogger(__name__)

#: Starts the reader of one stream (NativeCapture or PipeWireCapture, with the session's PipeWire remote, if any).
ReaderFactory = Callable[[StreamInfo], "StreamReader"]
#: The node id of "all monitors" where no stream shows them all: read by a :class:`Mosaic`.
NO_NODE = 0


def default_reader(stream: StreamInfo) -> StreamReader:
    return PipeWireCapture(stream.node_id, stream.x, stream.y, stream.w, stream.h)


class StreamReader(Protocol):
    """What the set needs of the reader of one entry: a PipeWireCapture, or a Mosaic of several."""

    node_id: int

    @property
    def frames(self) -> int: ...
    def start(self, notify: Callable[[], None]) -> None: ...
    def take(self) -> Damage: ...
    def grab(self, index: int) -> Frame: ...
    def close(self) -> None: ...


class Mosaic:
    """All monitors as one frame from every monitor's own stream (for a desktop that casts no area)."""

    node_id = NO_NODE

    def __init__(self, union: StreamInfo, parts: Sequence[StreamInfo], reader: ReaderFactory) -> None:
        self._union = union
        self._parts = list(parts)
        self._readers: list[StreamReader] = []
        try:
            for part in self._parts:
                self._readers.append(reader(part))
        except BaseException:
            self.close()
            raise

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self._readers)

    def start(self, notify: Callable[[], None]) -> None:
        for r in self._readers:
            r.start(notify)

    def take(self) -> Damage:
        taken = [r.take() for r in self._readers]
        reports = sum(d.reports for d in taken)
        return Damage(full=any(taken), reports=reports)

    def grab(self, index: int) -> Frame:
        u = self._union
        frame = np.zeros((u.h, u.w, 4), dtype=np.uint8)
        for part, r in zip(self._parts, self._readers, strict=True):
            x, y = part.x - u.x, part.y - u.y
            lend: Callable[[int], Frame] | None = getattr(r, "grab_view", None)  # copied here: no second copy
            frame[y: y + part.h, x: x + part.w] = lend(1) if lend is not None else r.grab(1)
        return frame

    def close(self) -> None:
        for r in self._readers:
            r.close()


class CastSet:
    """ScreenGrabber and DamageSource over the streams ``casts`` (index 0 = all monitors, then each)."""

    def __init__(self, casts: Sequence[StreamInfo], reader: ReaderFactory = default_reader,
                 selected: int = 1) -> None:
        if len(casts) < 2:
            raise ValueError("a cast set lists all monitors and at least one monitor")
        self._casts = list(casts)
        self._reader_factory = reader
        self._lock = threading.Lock()
        self._notify: Callable[[], None] = lambda: None
        self._started = False
        self._closed = False
        #: Buffers received by the readers closed so far (``frames`` adds the current one's).
        self._frames_before = 0
        self.switches = 0
        #: A new list from hotplug.py, taken between two frames by ``apply_layout``.
        self._staged: list[StreamInfo] | None = None
        #: The staged list is of a new Mutter session: every stream is new, whatever its node id (PipeWire
        #: reuses the ids of nodes gone), so the next grab opens a reader even on the same id.
        self._staged_fresh = False
        self._reopen = False
        self._layout_notify: Callable[[], None] = lambda: None
        self._index = selected if 0 <= selected < len(casts) else 1
        self._reader: StreamReader = self._open(self._index)

    @property
    def selected(self) -> int:
        return self._index

    @property
    def node_id(self) -> int:
        """The PipeWire node being read."""
        return self._reader.node_id

    @property
    def frames(self) -> int:
        """Buffers received from PipeWire over the whole session."""
        return self._frames_before + self._reader.frames

    # --- DamageSource ---------------------------------------------------------------------

    def start(self, notify: Callable[[], None]) -> None:
        """Start the current reader; under the lock, so a ``close`` meanwhile cannot leave a child running."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the cast set is closed")
            self._notify = notify
            self._started = True
            self._reader.start(self._forward(self._reader))

    def _open(self, index: int) -> StreamReader:
        cast = self._casts[index]
        if cast.node_id == NO_NODE:
            return Mosaic(cast, self._casts[1:], self._reader_factory)
        return self._reader_factory(cast)

    def _forward(self, reader: StreamReader) -> Callable[[], None]:
        def notify() -> None:
            if reader is self._reader:  # a late report of a reader just replaced wakes nothing
                self._notify()
        return notify

    def take(self) -> Damage:
        return self._reader.take()

    # --- ScreenGrabber --------------------------------------------------------------------

    def monitors(self) -> list[Monitor]:
        return [s.monitor() for s in self._casts]

    def grab(self, index: int) -> Frame:
        return self._select(index).grab(index)

    def grab_view(self, index: int) -> Frame:
        """The reader's lent buffer where it can lend one (frames.py), else a copy."""
        reader = self._select(index)
        lend: Callable[[int], Frame] | None = getattr(reader, "grab_view", None)
        return lend(index) if lend is not None else reader.grab(index)

    def grab_region(self, index: int, rect: Rect) -> Frame:
        """Part of the newest frame (the pipeline asks for the damage rectangles the native reader reported)."""
        reader = self._select(index)
        part: Callable[[int, Rect], Frame] | None = getattr(reader, "grab_region", None)
        if part is not None:
            return part(index, rect)
        return reader.grab(index)[rect.y: rect.y + rect.h, rect.x: rect.x + rect.w].copy()

    def _select(self, index: int) -> StreamReader:
        """The reader of monitor ``index``, switching streams first if another one is read."""
        if not 0 <= index < len(self._casts):
            raise IndexError(f"monitor {index} does not exist")
        old = self._reader
        new = self._casts[index]
        if not self._reopen and (index == self._index or new.node_id == old.node_id):
            self._index = index
            return old
        reader = self._open(index)
        # The new reader is started under the lock: a close() either comes first (the new reader is closed here,
        # with the PipeWire remote it may own) or after (it closes the started reader and kills its child).
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the cast set is closed")
                self._reader = reader  # before start: its first report must reach the session
                if self._started:
                    try:
                        reader.start(self._forward(reader))
                    except BaseException:
                        self._reader = old  # still started and not closed: the session goes on showing it
                        raise
                self._index = index
                self._reopen = False
                self._frames_before += old.frames
                self.switches += 1
        except BaseException:
            reader.close()
            raise
        old.close()
        log.info("Wayland monitor switch: monitor %d, PipeWire node %d (was %d), %dx%d at %d,%d", index, new.node_id,
                 old.node_id, new.w, new.h, new.x, new.y)
        return reader

    # --- LayoutFollower (agent/screen/session.py) --------------------------------------------

    def watch_layout(self, notify: Callable[[], None]) -> None:
        """``notify`` is called when a new list is staged (on the thread that stages it)."""
        self._layout_notify = notify

    def stage(self, casts: Sequence[StreamInfo], *, fresh: bool = False) -> None:
        """A new list (index 0 all monitors, then each), applied at the session's next ``apply_layout``;
        ``fresh``: its streams are all new (a new Mutter session), none is read by the current reader."""
        if len(casts) < 2:
            raise ValueError("a cast set lists all monitors and at least one monitor")
        with self._lock:
            self._staged = list(casts)
            self._staged_fresh = self._staged_fresh or fresh
        self._layout_notify()

    def apply_layout(self, shown: int) -> int:
        """Take the staged list (between two grabs); the index in it of the monitor ``shown`` before — 0 stays 0,
        a monitor is found by its connector —, else the primary's. A stream not in the new list is no longer
        read after the session's switch to that index."""
        with self._lock:
            staged, self._staged = self._staged, None
            fresh, self._staged_fresh = self._staged_fresh, False
        if staged is None:
            return shown
        before = self._casts[shown] if 0 <= shown < len(self._casts) else None
        self._casts = staged
        index: int | None = 0 if shown == 0 else None
        if index is None and before is not None and before.name:
            index = next((i for i in range(1, len(staged)) if staged[i].name == before.name), None)
        if index is None:
            index = next((i for i in range(1, len(staged)) if staged[i].primary), 1)
        # The reader goes on where its stream is the one now at ``index``; else the next grab opens the new one.
        self._index = index if staged[index].node_id == self._reader.node_id and not fresh else -1
        self._reopen = self._reopen or fresh
        return index

    def close(self) -> None:
        with self._lock:
            self._closed = True
            reader = self._reader
        reader.close()
