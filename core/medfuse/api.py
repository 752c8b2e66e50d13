"""The notebook API: :func:`extract`, :func:`compare` and :func:`runs`, each a thin layer over
what the command line runs (``medfuse extract``, ``medfuse compare``, ``medfuse runs``), with
DataFrames instead of files. Documented in docs/api.md; re-exported lazily as ``medfuse.extract``,
``medfuse.compare``, ``medfuse.runs``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .intensity import ReadOptions
    from .study import Study

__all__ = ["Results", "compare", "extract", "runs"]


def extract(inputs: str | Path | pd.DataFrame, blocks: Sequence[str] | None = None, jobs: int = 1, *,
            mask: str | None = "otsu_cell", transforms: Sequence[str] = (),
            params: dict[str, dict[str, Any]] | None = None,
            reader: ReadOptions | dict[str, Any] | None = None, progress: bool = False) -> pd.DataFrame:
    """The feature table of ``medfuse extract``: one row per image.

    Parameters
    ----------
    inputs : a folder (searched recursively), a glob, a CSV manifest with a ``path`` column
        (optional ``mask``, ``label``), or a DataFrame with ``path`` (and ``mask_path``) columns.
    blocks : extractor plugins (default: morphology, texture, colour); columns ``<block>.<feature>``.
    jobs : worker processes (1 = this process, -1 = every core).
    mask : mask plugin shared by the blocks, ``"file"`` (the manifest's masks) or ``None``.
    transforms : transform plugins applied first, e.g. ``["stain_normalize"]``.
    params : plugin parameters by plugin name, e.g. ``{"texture": {"levels": 16}}`` (``--set``).
    reader : :class:`~medfuse.intensity.ReadOptions` or its dict (``bits``, ``percentiles``,
        ``pixel_size_um``), as a study's ``reader`` table.

    Returns
    -------
    DataFrame: ``path``, [``label``], ``<block>.<feature>``..., ``error`` (``""`` or why the image
    failed; its features are NaN). ``df.attrs["medfuse"]`` holds the provenance that
    ``medfuse extract`` writes beside its table.
    """
    from .cli.common import resolve_jobs
    from .extract import DEFAULT_BLOCKS, extract_table, make_plugins
    from .intensity import ReadOptions

    plugins = make_plugins(list(blocks) if blocks is not None else list(DEFAULT_BLOCKS), mask, transforms, params)
    df, prov = extract_table(inputs, plugins.extractors, plugins.transforms, plugins.mask,
                             jobs=resolve_jobs(jobs), progress=progress, options=ReadOptions.coerce(reader))
    df.attrs["medfuse"] = prov
    return df


@dataclass
class Results:
    """What :func:`compare` returns: every number of the run as tables, and where its files are.

    Attributes
    ----------
    results : the content of ``results.json`` (schema in docs/cli.md).
    out_dir : the report folder; ``report_path`` its ``report.html``.
    predictions : out-of-fold predictions of every pipeline that ran: ``pipeline``, ``id``, ``path``,
        ``label``, ``fold``, ``pred``, ``proba.<class>`` (also ``predictions/<pipeline>.csv``).
    test_predictions : the same for an external test set (empty without one).
    mlflow_run_id : the MLflow run, with ``compare(..., mlflow=URI)``.
    """

    results: dict[str, Any]
    out_dir: Path
    predictions: pd.DataFrame
    test_predictions: pd.DataFrame | None = None
    files: dict[str, Path] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def report_path(self) -> Path:
        """``report.html`` (self-contained; ``report.md`` and ``results.json`` beside it)."""
        return self.files.get("html", self.out_dir / "report.html")

    @property
    def best(self) -> str | None:
        """The leaderboard's first pipeline."""
        board = self.results.get("leaderboard") or []
        return board[0]["pipeline"] if board else None

    @property
    def leaderboard(self) -> pd.DataFrame:
        """``results.json["leaderboard"]`` as a table, best first: ``pipeline``, each metric and its
        ``<metric>_ci95`` ([low, high]), calibration, ``not_worse_than_best``, ``p_vs_best``, timings."""
        import pandas as pd

        return pd.DataFrame(self.results.get("leaderboard") or [])

    @property
    def paired(self) -> pd.DataFrame:
        """Every pair of pipelines on the out-of-fold predictions (``results.json["paired"]["cv"]``):
        ``a`` (ranked higher), ``b``, ``n`` shared samples, ``diff_<metric>`` (a - b) with
        ``diff_<metric>_ci95`` (paired bootstrap), ``a_only``/``b_only`` (discordant pairs), McNemar
        ``p`` and Holm-adjusted ``p_holm``, ``significant``. Empty with fewer than two pipelines."""
        import pandas as pd

        section = (self.results.get("paired") or {}).get("cv") or {}
        rows = []
        for p in section.get("pairs") or []:
            row: dict[str, Any] = {"a": p["a"], "b": p["b"], "n": p.get("n")}
            for m, v in (p.get("diff") or {}).items():
                row[f"diff_{m}"] = v
                row[f"diff_{m}_ci95"] = (p.get("ci95") or {}).get(m)
            mc = p.get("mcnemar") or {}
            row |= {"a_only": mc.get("a_only"), "b_only": mc.get("b_only"), "p": mc.get("p"),
                    "p_holm": p.get("p_holm"), "significant": p.get("significant")}
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def per_class(self) -> pd.DataFrame:
        """Per pipeline and class: ``precision``, ``recall``, ``f1``, ``support`` on the out-of-fold
        predictions, with ``<score>_ci95`` bootstrap intervals."""
        import pandas as pd

        rows = []
        for name, p in (self.results.get("pipelines") or {}).items():
            if p.get("status") != "ok":
                continue
            cis = p.get("per_class_ci95") or {}
            for cls, scores in (p.get("per_class") or {}).items():
                row: dict[str, Any] = {"pipeline": name, "class": cls, **scores}
                for key, ci in (cis.get(cls) or {}).items():
                    row[f"{key}_ci95"] = ci
                rows.append(row)
        return pd.DataFrame(rows)

    @property
    def figures(self) -> dict[str, Path]:
        """The report's figures by name (file stem) -> PNG/SVG file under ``out_dir/figures``."""
        folder = self.out_dir / "figures"
        return {f.stem: f for f in sorted(folder.iterdir()) if f.is_file()} if folder.is_dir() else {}

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        return (f"<p><b>{self.results['study']['name']}</b>: <code>{self.report_path}</code></p>"
                + self.leaderboard.to_html(index=False))


def _frames(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    import pandas as pd

    parts = [f.assign(pipeline=name)[["pipeline", *f.columns]] for name, f in frames.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def compare(study: str | Path | Study, pipelines: Sequence[str] | None = None, data: str | Path | None = None, *,
            out: str | Path | None = None, jobs: int | None = None, folds: int | None = None,
            run_folds: int | None = None, only_folds: str | Sequence[int] | None = None,
            max_per_class: int | None = None, bootstrap: int | None = None,
            cache: str | Path | bool = True, shortcuts: bool | None = None, mlflow: str | None = None,
            profile: str | None = None, allow_cpu: bool = False) -> Results:
    """Run ``study``'s pipelines on shared folds and write its report, as ``medfuse compare``.

    Parameters
    ----------
    study : a registry name, ``FILE.toml``, ``FILE.toml:NAME`` or a :class:`~medfuse.study.Study`.
    pipelines : names to run (default: all of the study).
    data : data root the study's paths are relative to (default: ``$MEDFUSE_DATA``).
    out : report folder (default: ``runs/<study>-<timestamp>``); recorded for :func:`runs`.
    jobs, folds, run_folds, max_per_class, bootstrap, shortcuts : as the options of the same
        name of ``medfuse compare`` (default: the study's ``evaluation`` table).
    only_folds : evaluate only these folds, numbered from 1 (``"2"``, ``"2-5"``, ``[2, 4]``;
        ``--only-folds``); exclusive with ``run_folds``.
    cache : feature-block cache folder; ``True`` the default one, ``False`` none.
    mlflow : also log the run to this MLflow tracking store (``--mlflow``; :mod:`medfuse.mlflowlog`);
        its run id is then :attr:`Results.mlflow_run_id`.
    profile, allow_cpu : apply the study's profile ``profile`` (``--profile``; recorded in the results);
        one that requires a GPU is refused when TensorFlow sees none, unless ``allow_cpu``.

    Returns :class:`Results`. Raises :class:`~medfuse.errors.MedfuseError` subclasses for a bad
    study, data root or output folder; a pipeline that fails is recorded in ``results`` (status
    ``failed`` with its error) and the others go on.
    """
    from .cache import default_cache_dir
    from .cli.common import resolve_jobs, select_profile
    from .datapath import resolve_data_root
    from .errors import StudyError, did_you_mean
    from .host import get_host
    from .study import Study, check_plugins, resolve_study
    from .studyrun import compare_study, default_out_dir

    if mlflow:
        from .mlflowlog import check_available

        check_available()
    host = get_host()
    st = study if isinstance(study, Study) else resolve_study(str(study))
    check_plugins(st, host)
    st, _ = select_profile(st, profile, allow_cpu, host)  # before any data is read
    names = [pipelines] if isinstance(pipelines, str) else list(pipelines) if pipelines else None
    for p in names or []:
        if p not in st.pipelines:
            raise StudyError(st.source, f"studies.{st.name}.pipelines",
                             f"no pipeline {p!r}{did_you_mean(p, st.pipelines)}; defined: {', '.join(st.pipelines)}")
    cache_dir = default_cache_dir() if cache is True else None if cache is False else Path(cache)
    run = compare_study(st, names, resolve_data_root(data), Path(out) if out else default_out_dir(st.name),
                        host=host, jobs=resolve_jobs(jobs, st.evaluation.jobs), cache=cache_dir, folds=folds,
                        run_folds=run_folds, only_folds=only_folds, max_per_class=max_per_class,
                        bootstrap=bootstrap, shortcuts=shortcuts, meta={"command": None, "overrides": {}, "api": "medfuse.compare"})
    results = json.loads(run.paths["json"].read_text(encoding="utf-8"))
    res = Results(results, run.out_dir, _frames(run.result.predictions), _frames(run.result.test_predictions),
                  dict(run.paths))
    if mlflow and run.result.ok:
        from .mlflowlog import log_run

        res.mlflow_run_id = log_run(mlflow, results, run.out_dir)
    return res


def runs(folders: Sequence[str | Path] | None = None, study: str | None = None) -> pd.DataFrame:
    """Past ``compare`` runs, newest first (``medfuse runs``): ``study``, ``created``, ``best``,
    ``metric``, ``score``, ``ci95``, ``n_samples``, ``failed``, ``path``, ``report``.
    ``folders``: report folders or folders of them to scan besides the run index (default ``runs/``)."""
    import pandas as pd

    from .runindex import list_runs

    return pd.DataFrame(list_runs(folders, study=study))
