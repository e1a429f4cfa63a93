import numpy as np
import numpy.typing as npt

def differing_box(frame: npt.NDArray[np.uint8], under: npt.NDArray[np.int64], tile: int, x: int, y: int, w: int,
                  h: int, /) -> tuple[int, int, int, int] | None: ...
