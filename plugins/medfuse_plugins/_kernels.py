"""Compiled (numba) kernels for the classical features' hot spots: the functions of
:mod:`._kernel_source` (their one source, plain Python), compiled.

Compiled on first use and cached on disk (``cache=True``, beside ``_kernel_source.py``): the one-off
compile is paid once per environment, not per process. ``nogil=True`` lets threads run them in
parallel. The :data:`._kernel_source.HELPERS` that the kernels call are registered with numba
(``register_jitable``: compiled into each kernel that calls them, still plain Python elsewhere).
A run of a few images uses the NumPy twins instead (:mod:`._kernels_np`, same results bit for bit),
which start without numba.
"""

from __future__ import annotations

from typing import Any

import numba
from numba.extending import register_jitable

from . import _kernel_source as src

for _helper in src.HELPERS:
    register_jitable(_helper)


def _compiled(fn: Any) -> Any:
    return numba.njit(cache=True, nogil=True)(fn)


lbp_uniform = _compiled(src.lbp_uniform)
glcm_counts = _compiled(src.glcm_counts)
glcm_features = _compiled(src.glcm_features)
colour_histograms = _compiled(src.colour_histograms)
hist_stats = _compiled(src.hist_stats)
blue_minus_green = _compiled(src.blue_minus_green)
class_variance_table = _compiled(src.class_variance_table)
multiotsu4 = _compiled(src.multiotsu4)
label_components = _compiled(src.label_components)
fill_holes4 = _compiled(src.fill_holes4)
shape_stats = _compiled(src.shape_stats)
_lab_code = _compiled(src.lab_code)  # the colour kernel's per-value steps (tests/reference_impl.py)
_code8 = _compiled(src.code8)
