"""Log a comparison run to an MLflow tracking store (``compare --mlflow URI``; optional extra
``medfuse[mlflow]``, imported only when asked for).

One MLflow run per ``compare``, in the experiment named after the study:

* parameters: study, data root, folds, run folds, seed, bootstrap, samples, pipelines, ``--set``
  overrides (``override.<block>.<param>``), the ``--profile`` and what it changed
  (``profile``, ``profile.blocks.<block>.<param>``, ``profile.pipelines.<pipeline>.<param>``);
* metrics: for each pipeline that ran, each metric and its interval (``<pipeline>.<metric>``,
  ``<pipeline>.<metric>.ci95_low`` / ``.ci95_high``), Brier and ECE; for each pair of the paired
  comparison the difference with its interval and the Holm-adjusted p-value
  (``paired.<a>-vs-<b>.diff_<metric>``..., ``paired.<a>-vs-<b>.p_holm``);
* tags: ``medfuse.best``, ``medfuse.out_dir``, ``medfuse.version``;
* artifacts: ``report.html``, ``report.md``, ``results.json`` and ``figures/``.

A local folder (``./mlruns`` or ``file:/abs/mlruns``) works without a server: MLflow's
filesystem store, which MLflow 3 only opens with ``MLFLOW_ALLOW_FILE_STORE=true`` (set here for
folder URIs unless you set it yourself). Any other URI (``sqlite:///mlflow.db``,
``http://host:5000``) is passed to MLflow as is.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from .outputs import OutputError
from .util.formatting import finite

__all__ = ["check_available", "log_run"]

INSTALL_HINT = "pip install 'medfuse[mlflow]' (or mlflow)"


def check_available() -> None:
    """Raise :class:`OutputError` when MLflow is not installed (call before any work)."""
    if importlib.util.find_spec("mlflow") is None:
        raise OutputError(f"--mlflow: MLflow is not installed; {INSTALL_HINT}")


def _key(text: str) -> str:
    """An MLflow metric/param key: letters, digits, ``_ - . /`` and spaces."""
    return re.sub(r"[^\w\-./ ]", "_", str(text))


def _is_folder(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri


def _tracking_uri(uri: str) -> str:
    if "://" not in uri and not uri.startswith("file:"):
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def run_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The metrics logged for ``results`` (see the module docstring); non-finite values are left out."""
    out: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        v = finite(value)
        if v is not None:
            out[_key(key)] = v

    metrics = list(results["settings"]["metrics"]) + ["brier", "ece"]
    for row in results.get("leaderboard") or []:
        name = row["pipeline"]
        for m in metrics:
            put(f"{name}.{m}", row.get(m))
            ci = row.get(f"{m}_ci95") or [None, None]
            put(f"{name}.{m}.ci95_low", ci[0])
            put(f"{name}.{m}.ci95_high", ci[1])
    for pair in ((results.get("paired") or {}).get("cv") or {}).get("pairs") or []:
        base = f"paired.{pair['a']}-vs-{pair['b']}"
        for m, v in (pair.get("diff") or {}).items():
            put(f"{base}.diff_{m}", v)
            ci = (pair.get("ci95") or {}).get(m) or [None, None]
            put(f"{base}.diff_{m}.ci95_low", ci[0])
            put(f"{base}.diff_{m}.ci95_high", ci[1])
        put(f"{base}.p_holm", pair.get("p_holm"))
    return out


def run_params(results: dict[str, Any]) -> dict[str, str]:
    """The parameters logged for ``results``."""
    s = results["settings"]
    params = {"study": results["study"]["name"], "data_root": s.get("data_root"), "folds": s.get("folds"),
              "run_folds": s.get("run_folds"),
              "fold_numbers": ",".join(map(str, s["fold_numbers"])) if s.get("fold_numbers") else None,
              "seed": s.get("seed"), "bootstrap": s.get("bootstrap"),
              "max_per_class": s.get("max_per_class"), "n_samples": results["data"].get("n_selected"),
              "pipelines": ",".join(s.get("pipelines") or [])}
    for block, values in (s.get("overrides") or {}).items():
        for param, value in values.items():
            params[f"override.{block}.{param}"] = value
    profile = s.get("profile") or {}
    if profile:  # --profile: its name and what it changed (a profile's run is never the study as written)
        params["profile"] = profile["name"]
        for what in ("blocks", "pipelines"):
            for name, values in (profile.get(what) or {}).items():
                for param, value in values.items():
                    params[f"profile.{what}.{name}.{param}"] = value
    return {_key(k): str(v)[:6000] for k, v in params.items() if v is not None}


def log_run(uri: str, results: dict[str, Any], out_dir: str | Path) -> str:
    """Log the run whose report folder is ``out_dir`` to the tracking store ``uri``; return the
    MLflow run id. Raises :class:`OutputError` when MLflow is missing or refuses the store."""
    check_available()
    if _is_folder(uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import mlflow

    from . import __version__

    out = Path(out_dir)
    best = (results.get("leaderboard") or [{}])[0].get("pipeline")
    try:
        mlflow.set_tracking_uri(_tracking_uri(uri))
        mlflow.set_experiment(results["study"]["name"])
        with mlflow.start_run(run_name=out.name) as run:
            mlflow.log_params(run_params(results))
            mlflow.log_metrics(run_metrics(results))
            mlflow.set_tags({"medfuse.best": str(best), "medfuse.out_dir": str(out.resolve()),
                             "medfuse.version": __version__})
            for name in ("report.html", "report.md", "results.json"):
                if (out / name).is_file():
                    mlflow.log_artifact(str(out / name))
            if (out / "figures").is_dir():
                mlflow.log_artifacts(str(out / "figures"), artifact_path="figures")
            return run.info.run_id
    except mlflow.exceptions.MlflowException as exc:
        raise OutputError(f"--mlflow {uri}: {exc}") from None
