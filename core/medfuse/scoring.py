"""Batch scoring with a trained bundle: chunked, streaming, resumable, local or on Dask.

The inputs (a folder, a glob or a CSV manifest) are listed once and cut into fixed chunks of
``chunk_size`` rows. Each chunk is scored by a worker that loads the bundle once (a per-process
cache keyed by bundle path and manifest hash) and returns a small DataFrame; the parent writes
it atomically (temporary file + ``os.replace``) as ``<out>.parts/part-NNNNNN.parquet``.
``resume=True`` keeps the parts already written and scores only the missing chunks; the final
file is assembled from the parts in input order, so every input appears exactly once, and it is
itself written atomically. Nothing holds more than a few chunks in memory.

Parallelism is joblib: ``backend="loky"`` with ``jobs`` worker processes, or ``backend="dask"``
with a ``distributed.Client`` on ``scheduler`` (joblib's Dask backend runs the same chunks; the
bundle and the images must be readable by the Dask workers at the same paths). ``jobs=1``
scores in the calling process.

Every mode runs the same code on the same chunks with the same thread settings
(:data:`SCORING_THREADS` onnxruntime intra-/inter-op threads per network session and native
BLAS/OpenMP threads per chunk), so ``jobs=1``, ``jobs=N`` and Dask give bit-identical
probabilities. Networks run under onnxruntime: scoring never imports TensorFlow or Keras.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import MedfuseError
from .imageio import IMAGE_SUFFIXES

PLAN = "plan.json"
INPUTS = "inputs.parquet"
MASK_COLUMNS = ("mask_path", "mask")
RESERVED = ("path", "id", "label", "group", *MASK_COLUMNS)
SCORING_THREADS = 1  # threads per scoring process (onnxruntime sessions, BLAS/OpenMP), in every mode


class ScoringError(MedfuseError):
    """Scoring cannot start or resume (no inputs, wrong output type, a changed plan)."""


# ---- inputs ---------------------------------------------------------------------------------------

def list_inputs(spec: str | Path) -> pd.DataFrame:
    """The images to score, as a DataFrame with ``path`` (as written in the output), ``read_path``
    (where to read it) and, from a CSV manifest, ``mask_path`` and any other columns (tabular).

    ``spec`` is a folder (image files found recursively, sorted), a glob pattern (sorted) or a CSV
    file with a ``path`` column (relative paths are relative to the CSV's folder; order kept).
    """
    text = str(spec)
    p = Path(text)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise ScoringError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) found in this folder")
        return pd.DataFrame({"path": files, "read_path": files})
    if p.is_file() and p.suffix.lower() == ".csv":
        return _csv_inputs(p)
    if any(ch in text for ch in "*?["):
        files = sorted(f for f in _glob.glob(text, recursive=True) if Path(f).is_file())
        if not files:
            raise ScoringError(f"{text}: the glob matches no files")
        return pd.DataFrame({"path": files, "read_path": files})
    if p.is_file():
        raise ScoringError(f"{p}: INPUT must be a folder, a glob or a CSV manifest with a 'path' column")
    raise ScoringError(f"{p}: no such folder or file")


def _csv_inputs(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"path": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ScoringError(f"{path}: unreadable CSV manifest ({exc})") from None
    if "path" not in df.columns:
        raise ScoringError(f"{path}: a CSV manifest needs a 'path' column; found {', '.join(map(str, df.columns))}")
    df = df[df["path"].notna()].reset_index(drop=True)
    if df.empty:
        raise ScoringError(f"{path}: the CSV manifest lists no paths")
    base = path.parent

    def resolve(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        q = Path(str(v))
        return str(q if q.is_absolute() else base / q)

    out = pd.DataFrame({"path": df["path"].astype(str).tolist(),
                        "read_path": pd.Series([resolve(v) for v in df["path"]], dtype=object)})
    mask_col = next((c for c in MASK_COLUMNS if c in df.columns), None)
    if mask_col:
        out["mask_path"] = pd.Series([resolve(v) for v in df[mask_col]], dtype=object)
    for c in df.columns:
        if c not in RESERVED:
            out[c] = df[c]
    return out


def _inputs_digest(inputs: pd.DataFrame) -> str:
    h = hashlib.sha1()
    for col in ("path", "read_path", "mask_path"):
        if col in inputs:
            h.update(col.encode())
            h.update("\0".join(map(str, inputs[col].tolist())).encode())
    return h.hexdigest()


# ---- workers --------------------------------------------------------------------------------------

_BUNDLES: dict[tuple[str, str], Any] = {}


def worker_bundle(path: str, manifest_sha256: str, threads: int | None = SCORING_THREADS,
                  trust_pickle: bool = False) -> Any:
    """The bundle at ``path``, loaded once per process (cache keyed by path and manifest hash),
    its networks' onnxruntime sessions running ``threads`` threads."""
    key = (path, manifest_sha256)
    bundle = _BUNDLES.get(key)
    if bundle is None:
        from .bundle import load_bundle

        bundle = load_bundle(path, threads=threads, trust_pickle=trust_pickle)
        if bundle.manifest_sha256 != manifest_sha256:
            raise ScoringError(f"{path}: the bundle changed while scoring (manifest hash differs); rerun")
        _BUNDLES.clear()
        _BUNDLES[key] = bundle
    return bundle


_WATCHED: set[int] = set()


def _exit_with_parent(parent_pid: int) -> None:
    """In a local worker process: exit as soon as the scoring process is gone (e.g. ``kill -9``),
    instead of lingering as an orphan holding its memory."""
    if parent_pid in _WATCHED or parent_pid == os.getpid() or os.getppid() != parent_pid:
        return
    _WATCHED.add(parent_pid)
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="medfuse-parent-watch", daemon=True).start()


def score_chunk(bundle_path: str, manifest_sha256: str, index: int, rows: pd.DataFrame,
                batch_size: int = 256, threads: int = SCORING_THREADS,
                parent_pid: int | None = None, trust_pickle: bool = False) -> tuple[int, pd.DataFrame, float]:
    """Score one chunk: ``(index, result frame, seconds)``; runs in a worker process (or in the
    scoring process itself with ``jobs=1``).

    ``threads`` sizes the onnxruntime sessions (set once, when the bundle loads) and the native
    BLAS/OpenMP pools (for this chunk); ``parent_pid`` (local workers) makes the worker exit when
    that process dies; ``trust_pickle`` lets a format-1 bundle load (see :func:`score`).
    """
    from threadpoolctl import threadpool_limits

    if parent_pid:
        _exit_with_parent(parent_pid)
    t0 = time.perf_counter()
    bundle = worker_bundle(bundle_path, manifest_sha256, threads, trust_pickle)
    masks = rows["mask_path"].tolist() if "mask_path" in rows else None
    extra = [c for c in rows.columns if c not in ("path", "read_path", "mask_path")]
    table = rows[extra].reset_index(drop=True) if extra and bundle.table_columns else None
    with threadpool_limits(limits=threads):
        df = bundle.predict(rows["read_path"].tolist(), masks=masks, table=table, batch_size=batch_size)
    df["path"] = rows["path"].to_numpy()
    return index, df, time.perf_counter() - t0


# ---- results --------------------------------------------------------------------------------------

@dataclass
class ScoreSummary:
    """What a scoring run did."""

    out: Path
    n_inputs: int
    n_scored: int
    n_failed: int
    n_chunks: int
    chunks_resumed: int
    seconds: float
    failures: Counter = field(default_factory=Counter)  # error kind -> count
    examples: list[str] = field(default_factory=list)  # a few full error messages
    resumed_rows: int = 0  # rows taken from an interrupted run's parts

    @property
    def images_per_second(self) -> float:
        """Rows scored by this run per second of wall time (bundle loading included)."""
        return (self.n_inputs - self.resumed_rows) / self.seconds if self.seconds > 0 else float("nan")

    def describe(self) -> str:
        lines = [f"scored {self.n_scored} of {self.n_inputs} input(s), {self.n_failed} failed -> {self.out}"]
        if self.chunks_resumed:
            lines.append(f"resumed: {self.chunks_resumed} of {self.n_chunks} chunk(s) were already done")
        lines.append(f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s")
        if self.failures:
            lines.append("failures by kind:")
            lines += [f"  {n:6d}  {kind}" for kind, n in self.failures.most_common(10)]
            lines.append("examples:")
            lines += [f"  {e}" for e in self.examples]
        return "\n".join(lines)


def _error_kind(message: str, path: str) -> str:
    text = message.replace(path, "").lstrip(": ").strip()
    return text.split("(")[0].strip()[:80] or "error"


def _arrow_schema(classes: list[str]) -> Any:
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("label", pa.string()),
                      *[(f"proba.{c}", pa.float64()) for c in classes], ("error", pa.string())])


def _write_atomic_parquet(df: pd.DataFrame, target: Path, schema: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), tmp)
    os.replace(tmp, target)


def _output_kind(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ScoringError(f"{out}: output must end in .csv or .parquet")


# ---- the job --------------------------------------------------------------------------------------

def score(bundle: str | Path, inputs: str | Path | pd.DataFrame, out: str | Path, *, jobs: int = 1,
          chunk_size: int = 256, batch_size: int = 256, resume: bool = False, backend: str = "loky",
          scheduler: str | None = None, progress: bool = True, keep_parts: bool = False,
          on_chunk: Callable[[int, int], None] | None = None, trust_pickle: bool = False) -> ScoreSummary:
    """Score ``inputs`` with the bundle folder ``bundle`` into ``out`` (``.csv`` or ``.parquet``).

    Parameters
    ----------
    bundle : trained bundle folder (verified once here, then loaded once per worker).
    inputs : folder, glob, CSV manifest, or a DataFrame from :func:`list_inputs`.
    out : output file; one row per input with ``path, label, proba.<class>..., error``.
    jobs : worker processes (loky) or, with Dask, parallel tasks (``-1`` = all workers).
    chunk_size : inputs per chunk (the unit of parallelism, progress and resume).
    batch_size : images per pipeline call inside a chunk.
    resume : keep the chunks written by an interrupted run of the same job.
    backend : ``"loky"`` (local processes) or ``"dask"`` (``scheduler`` address required).
    progress : show a progress bar (images/s, ETA) on stderr.
    keep_parts : keep ``<out>.parts/`` after assembling ``out``.
    on_chunk : called with ``(chunks done, chunks total)`` after each chunk (for tests, hooks).
    trust_pickle : also score a format-1 bundle (pickles, which run code when loaded); only for
        bundles you made yourself.

    Every process that scores chunks runs its onnxruntime sessions with :data:`SCORING_THREADS`
    threads, so that all modes give bit-identical probabilities.
    """
    from .bundle import load_verified, verify_bundle

    t0 = time.perf_counter()
    out = Path(out)
    kind = _output_kind(out)
    if backend not in ("loky", "dask"):
        raise ScoringError(f"unknown backend {backend!r}; use 'loky' or 'dask'")
    if backend == "dask" and not scheduler:
        raise ScoringError("backend 'dask' needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    if chunk_size < 1:
        raise ScoringError(f"chunk_size must be >= 1, got {chunk_size}")
    # verify here, so that a bad bundle fails before any work; load it only if scoring in-process
    path, manifest, digest = verify_bundle(bundle, trust_pickle=trust_pickle)
    in_process = jobs == 1 and backend == "loky"
    loaded = load_verified(path, manifest, digest, threads=SCORING_THREADS) if in_process else None
    bundle_path = str(path)
    table = inputs.copy() if isinstance(inputs, pd.DataFrame) else list_inputs(inputs)
    if "read_path" not in table:
        table["read_path"] = table["path"]
    parts = out.with_name(out.name + ".parts")
    plan = {"bundle": bundle_path, "manifest_sha256": digest, "chunk_size": chunk_size,
            "n_inputs": len(table), "inputs_sha1": _inputs_digest(table)}
    table = _prepare_parts(parts, plan, table, resume)
    n = len(table)
    n_chunks = -(-n // chunk_size)
    schema = _arrow_schema([str(c) for c in manifest["classes"]])
    done = {i for i in range(n_chunks) if (parts / _part_name(i)).is_file()}
    todo = [i for i in range(n_chunks) if i not in done]
    resumed_rows = sum(min(chunk_size, n - i * chunk_size) for i in done)
    if loaded is not None:
        _BUNDLES.clear()
        _BUNDLES[(bundle_path, digest)] = loaded  # in-process: reuse the bundle loaded above

    def chunk_rows(i: int) -> pd.DataFrame:
        return table.iloc[i * chunk_size:(i + 1) * chunk_size].reset_index(drop=True)

    with _progress(progress, n, resumed_rows) as advance:
        for k, (i, df, _secs) in enumerate(_run_chunks(todo, chunk_rows, bundle_path, digest, jobs, batch_size,
                                                       backend, scheduler, in_process, trust_pickle), start=1):
            _write_atomic_parquet(df, parts / _part_name(i), schema)
            advance(len(df))
            if on_chunk is not None:
                on_chunk(len(done) + k, n_chunks)
    summary = _assemble(parts, n_chunks, out, kind, schema)
    summary.n_chunks, summary.chunks_resumed, summary.resumed_rows = n_chunks, len(done), resumed_rows
    summary.seconds = time.perf_counter() - t0
    if summary.n_scored + summary.n_failed != n:
        raise ScoringError(f"internal: assembled {summary.n_scored + summary.n_failed} rows for {n} inputs")
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return summary


def _part_name(i: int) -> str:
    return f"part-{i:06d}.parquet"


def _prepare_parts(parts: Path, plan: dict[str, Any], table: pd.DataFrame, resume: bool) -> pd.DataFrame:
    """Create (or, with ``resume``, check and reuse) the parts folder; return the input table."""
    plan_file = parts / PLAN
    if resume and plan_file.is_file():
        try:
            old = json.loads(plan_file.read_text())
        except json.JSONDecodeError:
            old = {}
        for key, what in (("manifest_sha256", "bundle"), ("chunk_size", "chunk size"),
                          ("inputs_sha1", "list of inputs")):
            if old.get(key) != plan[key]:
                raise ScoringError(f"{parts}: cannot resume: the {what} differs from the interrupted run's; "
                                   "rerun without --resume to start over")
        return pd.read_parquet(parts / INPUTS) if (parts / INPUTS).is_file() else table
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    table.to_parquet(parts / ".inputs.tmp", index=False)
    os.replace(parts / ".inputs.tmp", parts / INPUTS)
    (parts / ".plan.tmp").write_text(json.dumps(plan, indent=2))
    os.replace(parts / ".plan.tmp", plan_file)
    return table


def _run_chunks(todo: list[int], chunk_rows: Callable[[int], pd.DataFrame], bundle_path: str, digest: str,
                jobs: int, batch_size: int, backend: str, scheduler: str | None, in_process: bool = False,
                trust_pickle: bool = False) -> Iterator[tuple[int, pd.DataFrame, float]]:
    if not todo:
        return
    if in_process:
        for i in todo:
            yield score_chunk(bundle_path, digest, i, chunk_rows(i), batch_size, SCORING_THREADS, None, trust_pickle)
        return
    from joblib import Parallel, delayed, parallel_config

    if backend == "dask":
        try:
            from distributed import Client
        except ImportError:
            raise ScoringError("backend 'dask' needs dask[distributed]: pip install 'medfuse[dask]'") from None
        try:
            client = Client(scheduler)  # connect timeout: dask config distributed.comm.timeouts.connect
        except (OSError, TimeoutError) as exc:
            raise ScoringError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            if jobs == 1:  # joblib would run n_jobs=1 in this process, not on the cluster
                yield from _one_at_a_time(lambda *a: client.submit(*a, pure=False), todo, chunk_rows, bundle_path,
                                          digest, batch_size, None, window=1, trust_pickle=trust_pickle)
                return
            with parallel_config(backend="dask"):
                yield from Parallel(n_jobs=jobs, return_as="generator_unordered")(
                    delayed(score_chunk)(bundle_path, digest, i, chunk_rows(i), batch_size, SCORING_THREADS, None,
                                         trust_pickle)
                    for i in todo)
        return
    n_jobs = (os.cpu_count() or 1) if jobs < 1 else jobs
    if n_jobs == 1:  # joblib would run n_jobs=1 in this process; this needs one worker process
        from joblib.externals.loky import ProcessPoolExecutor  # its own pool, not joblib's shared one

        threads = str(SCORING_THREADS)
        env = {v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        executor = ProcessPoolExecutor(max_workers=1, env=env)
        try:
            yield from _one_at_a_time(executor.submit, todo, chunk_rows, bundle_path, digest, batch_size,
                                      os.getpid(), trust_pickle=trust_pickle)
        finally:
            executor.shutdown(wait=False, kill_workers=True)
        return
    with parallel_config(backend="loky", inner_max_num_threads=SCORING_THREADS):
        yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(score_chunk)(bundle_path, digest, i, chunk_rows(i), batch_size, SCORING_THREADS, os.getpid(),
                                 trust_pickle)
            for i in todo)


def _one_at_a_time(submit: Callable[..., Any], todo: list[int], chunk_rows: Callable[[int], pd.DataFrame],
                   bundle_path: str, digest: str, batch_size: int, parent_pid: int | None,
                   window: int = 2, trust_pickle: bool = False) -> Iterator[tuple[int, pd.DataFrame, float]]:
    """Score the chunks through ``submit`` (a loky executor's or a Dask client's) with at most
    ``window`` of them submitted at a time (a one-worker pool queues the second one)."""
    from collections import deque

    pending: deque = deque()
    try:
        for i in todo:
            pending.append(submit(score_chunk, bundle_path, digest, i, chunk_rows(i), batch_size,
                                  SCORING_THREADS, parent_pid, trust_pickle))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def _assemble(parts: Path, n_chunks: int, out: Path, kind: str, schema: Any) -> ScoreSummary:
    """Write ``out`` from the parts in order, atomically; count scored and failed rows."""
    import pyarrow.parquet as pq

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = ScoreSummary(out, 0, 0, 0, n_chunks, 0, 0.0)
    writer = pq.ParquetWriter(tmp, schema) if kind == "parquet" else None
    try:
        for i in range(n_chunks):
            part = parts / _part_name(i)
            if not part.is_file():
                raise ScoringError(f"{part}: chunk {i} is missing after scoring")
            t = pq.read_table(part, schema=schema)
            if writer is not None:
                writer.write_table(t)
            else:
                t.to_pandas().to_csv(tmp, mode="w" if i == 0 else "a", header=i == 0, index=False)
            df = t.select(["path", "error"]).to_pandas()
            failed = df["error"].fillna("").astype(bool)
            summary.n_inputs += len(df)
            summary.n_failed += int(failed.sum())
            for p, e in zip(df["path"][failed], df["error"][failed]):
                summary.failures[_error_kind(e, p)] += 1
                if len(summary.examples) < 5:
                    summary.examples.append(e)
        summary.n_scored = summary.n_inputs - summary.n_failed
        if writer is not None:
            writer.close()
            writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return summary


class _progress:
    """Rich progress bar with images/s and ETA, or a no-op."""

    def __init__(self, enabled: bool, total: int, completed: int):
        self.enabled, self.total, self.completed = enabled, total, completed
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda k: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                if not speed and task.elapsed:  # rich needs two updates for its estimate
                    speed = (task.completed - task.fields.get("resumed", 0)) / task.elapsed
                return Text(f"{speed:.1f} img/s" if speed else "- img/s")

        self._bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), Rate(),
                             TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                             console=Console(stderr=True), speed_estimate_period=60)
        self._bar.__enter__()
        task = self._bar.add_task("scoring", total=self.total, completed=self.completed, resumed=self.completed)
        return lambda k: self._bar.advance(task, k)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
