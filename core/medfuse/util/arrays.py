"""Small numpy array helpers shared by core modules."""

from __future__ import annotations

import numpy as np


def dihedral(x: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of ``x`` (..., H, W, C) with H == W; ``k`` in 0..7."""
    if k & 4:
        x = np.swapaxes(x, -3, -2)
    if k & 1:
        x = x[..., ::-1, :, :]
    if k & 2:
        x = x[..., :, ::-1, :]
    return x
