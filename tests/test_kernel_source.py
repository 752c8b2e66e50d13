"""The compiled kernels and their NumPy twins share one source (``medfuse_plugins._kernel_source``,
issue 15: no duplicated kernel logic): that module imports no numba, and every compiled kernel and
every helper it calls is defined in it, so numba's on-disk cache (checked against each kernel's own
file only) cannot keep a kernel compiled from an older helper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medfuse_plugins import _kernel_source, _kernels, _kernels_np

REPO = Path(__file__).resolve().parents[1]


def test_compiled_kernels_and_their_helpers_are_defined_in_the_kernel_source() -> None:
    source = Path(_kernel_source.__file__).resolve()
    compiled = {name: getattr(_kernels, name) for name in (*_kernels_np.TWINS, "_lab_code", "_code8")}
    elsewhere = {name: fn.py_func.__code__.co_filename for name, fn in compiled.items()
                 if Path(fn.py_func.__code__.co_filename).resolve() != source}
    elsewhere |= {fn.__name__: fn.__code__.co_filename for fn in _kernel_source.HELPERS
                  if Path(fn.__code__.co_filename).resolve() != source}
    assert not elsewhere, f"define these in {source.name} (numba's cache would go stale): {elsewhere}"


def test_kernel_source_imports_without_numba() -> None:
    code = "import sys, medfuse_plugins._kernel_source\nprint('numba' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "core"), str(REPO / "plugins")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False", "medfuse_plugins._kernel_source imports numba (the twins must start without it)"
