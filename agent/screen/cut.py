"""Cut a picture drawn over FILLs to the pixels the FILLs do not already show.

A video frame's one-colour tiles go as FILL rectangles, which may span the tiles that
need a picture (a colour bar crossed by a moving line is one FILL); the pictures are drawn
over them afterwards. A picture then only needs the box of its pixels that differ from the
colour under them: on testsrc2 with a turning hue that is 76 % of the pixels of the
pictured rectangles, and libjpeg's time falls with them (1.58 → 1.25 ms a 1080p frame).

Finding the box is the native ``_cut`` module's job (``agent/screen/_cut.c``, built with the
package where a C compiler is present: ``pyproject.toml``'s ext-modules, optional). In numpy
the same answer costs more than it saves, so without the module the pictures go whole, as
they always did: :data:`AVAILABLE` is False and :func:`differing_box` is never asked.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .tiles import TILE, Rect

_Native = Callable[[npt.NDArray[np.uint8], npt.NDArray[np.int64], int, int, int, int, int],
                  "tuple[int, int, int, int] | None"]
_differing_box: _Native | None
try:
    from ._cut import differing_box as _differing_box
except ImportError:  # no compiler where the package was installed: pictures go whole
    _differing_box = None

#: Whether pictures over FILLs are cut to their differing pixels.
AVAILABLE = _differing_box is not None

#: A tile with no FILL under it: every pixel of it counts as differing.
NO_FILL = -1


def no_fills(shape: tuple[int, int]) -> npt.NDArray[np.int64]:
    """The colour under each tile of a grid, before any FILL is drawn."""
    return np.full(shape, NO_FILL, dtype=np.int64)


def differing_box(frame: npt.NDArray[np.uint8], under: npt.NDArray[np.int64], rect: Rect) -> Rect | None:
    """The bounding box of ``rect``'s pixels that differ from the FILL colour under their tile.

    ``under[row, col]`` is the 32-bit pixel a FILL drew under tile (row, col), or :data:`NO_FILL`;
    None when every pixel equals the colour under it. Only called when :data:`AVAILABLE`.
    """
    assert _differing_box is not None
    box = _differing_box(frame, under, TILE, rect.x, rect.y, rect.w, rect.h)
    return None if box is None else Rect(*box)
