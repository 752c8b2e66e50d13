"""`--json` output goes through the one JSON conversion (medfuse.util.jsonable): numpy numbers stay
numbers, NaN becomes null instead of a crash."""

from __future__ import annotations

import json

import numpy as np
from medfuse.cli.common import echo_json


def test_echo_json_writes_numpy_numbers_as_numbers_and_nan_as_null(capsys):
    echo_json({"n": np.int64(3), "acc": np.float32(0.5), "auc": float("nan"), "ci": np.array([0.25, np.inf])})
    assert json.loads(capsys.readouterr().out) == {"n": 3, "acc": 0.5, "auc": None, "ci": [0.25, None]}
