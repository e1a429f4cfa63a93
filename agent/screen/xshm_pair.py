"""Two XShm segments of the agent's own, written in turn: a lent frame stays intact through the next grab.

The screen pipeline compares each capture with the frame the viewer last got. With one
segment (mss's) that frame had to be copied out of it before the next capture overwrote
it — whole tile rows whenever a video's frame was caught between two of its steps. With
two, the capture just made becomes the last-sent frame as it is, and the next capture goes
into the other segment. The segments are attached on mss's own XCB connection (as mss
attaches its one), so they go with it when mss is closed or replaced.
"""

from __future__ import annotations

import logging
import mmap
import os
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]


class XShmPair:
    """Two shared-memory segments the X server writes screen images into, alternately."""

    def __init__(self, impl: Any, size: int) -> None:
        """``impl``: mss's XShmGetImage backend (its connection, drawable and depth); ``size`` in bytes."""
        from mss.linux import xcb as xcb_module
        from mss.linux.base import ALL_PLANES

        self._xcb: Any = xcb_module  # generated bindings: no declared exports
        self._planes = ALL_PLANES
        self._impl = impl
        self.size = size
        self._segments: list[tuple[Any, mmap.mmap]] = []
        #: Where each segment is mapped (first byte, end): a lent view is recognised by its address.
        self._spans: list[tuple[int, int]] = []
        try:
            for _ in range(2):
                self._segments.append(self._attach(size))
        except BaseException:
            self.close()
            raise
        self._next = 0

    def _attach(self, size: int) -> tuple[Any, mmap.mmap]:
        fd = os.memfd_create("helpline-screen", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            buf = mmap.mmap(fd, size)  # shared, read-write: damage steps write changed regions into the last frame
        except BaseException:
            os.close(fd)
            raise
        try:
            segment = self._xcb.ShmSeg(self._xcb.generate_id(self._impl.conn).value)
            self._xcb.shm_attach_fd(self._impl.conn, segment, fd, read_only=False)  # XCB closes the fd either way
        except BaseException:
            buf.close()
            raise
        start = np.frombuffer(buf, dtype=np.uint8).ctypes.data  # a passing view: the mapping stays closable
        self._spans.append((start, start + size))
        return segment, buf

    def grab(self, left: int, top: int, width: int, height: int) -> Frame | None:
        """The screen rectangle into the segment not lent out last time; None if it does not fit or the
        server answers with another depth (the caller then takes mss's path)."""
        if width * height * 4 > self.size:
            return None
        segment, buf = self._segments[self._next]
        xcb = self._xcb
        reply = xcb.shm_get_image(
            self._impl.conn, self._impl.drawable, left, top, width, height, self._planes, xcb.ImageFormat.ZPixmap,
            segment, 0,
        )
        if reply.depth != self._impl.drawable_depth:
            return None
        self._next ^= 1
        return np.frombuffer(buf, dtype=np.uint8, count=width * height * 4).reshape(height, width, 4)

    def lent(self, view: Frame) -> bool:
        """True when ``view`` lies in one of the two segments: the next :meth:`grab` writes the other one
        if ``view`` came from the last."""
        address = int(view.ctypes.data)
        return any(start <= address < end for start, end in self._spans)

    def close(self) -> None:
        """Unmap both segments; one still lent out is unmapped when its last view goes."""
        for _, buf in self._segments:
            try:
                buf.close()
            except BufferError:
                log.debug("an XShm segment is still lent out at close")
        self._segments = []
        self._spans = []
