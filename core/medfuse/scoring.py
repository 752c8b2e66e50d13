"""Batch scoring with a trained bundle: chunked, streaming, resumable, local or on Dask.

The inputs (a folder, a glob or a CSV manifest) are listed once and cut into fixed chunks of
``chunk_size`` rows. Each chunk is scored by a worker that loads the bundle once (a per-process
cache keyed by bundle path and manifest hash) and returns a small DataFrame; the parent writes
it atomically (:func:`medfuse.outputs.atomic_output`) as ``<out>.parts/part-NNNNNN.parquet``.
``resume=True`` keeps the parts already written and scores only the missing chunks; the final
file is assembled from the parts in input order, so every input appears exactly once, and it is
itself written atomically. Nothing holds more than a few chunks in memory. The whole run, resume
included, holds the lock ``<out>.lock`` (:mod:`medfuse.outputs`): a second run on the same output
refuses instead of deleting the first's parts, and an unwritable location fails before any work.
A Parquet output carries ``medfuse.version``, ``medfuse.bundle`` and
``medfuse.bundle_manifest_sha256`` in its key/value metadata (a CSV output nothing extra).

The chunk machinery (:func:`prepare_parts`, :func:`part_name`, :func:`write_part`,
:class:`LocalPool`, :func:`windowed`, :func:`assemble_parts`, :func:`output_kind`,
:func:`output_metadata`) is shared with :mod:`medfuse.objectscoring`, which scores objects on it.

Parallelism is joblib's loky (``backend="loky"``, ``jobs`` worker processes) or a Dask cluster
(``backend="dask"``, implied by a ``scheduler`` address): chunks are submitted as futures with
``retries``, at most a bounded window of them in flight, so a worker that dies mid-chunk costs
only a rerun of its chunks (the scheduler reassigns them; see :data:`DASK_RETRIES`). The bundle
and the images must be readable by the Dask workers at the same paths. ``jobs=1`` scores in the
calling process.

Every mode runs the same code on the same chunks with the same thread settings
(:data:`SCORING_THREADS` onnxruntime intra-/inter-op threads per network session and native
BLAS/OpenMP threads per chunk), so ``jobs=1``, ``jobs=N`` and Dask give bit-identical
probabilities. Networks run under onnxruntime: scoring never imports TensorFlow or Keras.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import MedfuseError
from .inputs import inputs_digest, list_inputs
from .outputs import atomic_output, guarded_output, write_text
from .util.progress import progress_bar

PLAN = "plan.json"
INPUTS = "inputs.parquet"
NOT_TABULAR = ("id", "label", "group")  # manifest columns never passed to a bundle's tabular blocks
SCORING_THREADS = 1  # threads per scoring process (onnxruntime sessions, BLAS/OpenMP), in every mode
DASK_RETRIES = 3  # reruns of a Dask chunk whose task raised (a lost worker's tasks are rescheduled anyway)
METADATA_KEYS = ("medfuse.version", "medfuse.bundle", "medfuse.bundle_manifest_sha256")  # Parquet output


class ScoringError(MedfuseError):
    """Scoring cannot start or resume (no inputs, wrong output type, a changed plan)."""


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
        keep_bundle(path, manifest_sha256, bundle)
    return bundle


def keep_bundle(path: str, manifest_sha256: str, bundle: Any) -> None:
    """Make ``bundle`` the one :func:`worker_bundle` hands out in this process (a scoring process
    with ``jobs=1`` reuses the bundle it has already loaded and verified)."""
    _BUNDLES.clear()
    _BUNDLES[(path, manifest_sha256)] = bundle


_WATCHED: set[int] = set()


def exit_with_parent(parent_pid: int) -> None:
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


@dataclass(frozen=True)
class ChunkTask:
    """What every chunk of one scoring job shares (sent with each chunk to the worker).

    ``threads`` sizes the onnxruntime sessions (set once, when the bundle loads) and the native
    BLAS/OpenMP pools (per chunk); ``max_pixels``: see :meth:`medfuse.bundle.Bundle.predict`;
    ``trust_pickle`` lets a format-1 bundle load (see :func:`score`).
    """

    bundle_path: str
    manifest_sha256: str
    batch_size: int = 256
    threads: int = SCORING_THREADS
    max_pixels: int | None = None
    trust_pickle: bool = False


def score_chunk(task: ChunkTask, index: int, rows: pd.DataFrame,
                parent_pid: int | None = None) -> tuple[int, pd.DataFrame, float]:
    """Score one chunk of ``task``: ``(index, result frame, seconds)``; runs in a worker process
    (or in the scoring process itself with ``jobs=1``). ``parent_pid`` (local workers) makes the
    worker exit when that process dies."""
    from threadpoolctl import threadpool_limits

    if parent_pid:
        exit_with_parent(parent_pid)
    t0 = time.perf_counter()
    bundle = worker_bundle(task.bundle_path, task.manifest_sha256, task.threads, task.trust_pickle)
    masks = rows["mask_path"].tolist() if "mask_path" in rows else None
    extra = [c for c in rows.columns if c not in ("path", "read_path", "mask_path")]
    table = rows[extra].reset_index(drop=True) if extra and bundle.table_columns else None
    with threadpool_limits(limits=task.threads):
        df = bundle.predict(rows["read_path"].tolist(), masks=masks, table=table, batch_size=task.batch_size,
                            max_pixels=task.max_pixels)
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
    n_warned: int = 0  # scored rows with a `warning` (outside the training data)
    warned_examples: list[str] = field(default_factory=list)  # a few 'path: warning' lines

    @property
    def images_per_second(self) -> float:
        """Rows scored by this run per second of wall time (bundle loading included)."""
        return (self.n_inputs - self.resumed_rows) / self.seconds if self.seconds > 0 else float("nan")

    def describe(self) -> str:
        lines = [f"scored {self.n_scored} of {self.n_inputs} input(s), {self.n_failed} failed -> {self.out}"]
        if self.chunks_resumed:
            lines.append(f"resumed: {self.chunks_resumed} of {self.n_chunks} chunk(s) were already done")
        lines.append(f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s")
        if self.n_warned:
            lines.append(f"{self.n_warned} scored row(s) lie outside the training data (see the 'warning' "
                         "column; do not trust them without a look), e.g.:")
            lines += [f"  {e}" for e in self.warned_examples]
        if self.failures:
            lines.append("failures by kind:")
            lines += [f"  {n:6d}  {kind}" for kind, n in self.failures.most_common(10)]
            lines.append("examples:")
            lines += [f"  {e}" for e in self.examples]
        return "\n".join(lines)


def _error_kind(message: str, path: str) -> str:
    """The kind of an error row for the run summary: its message without the path, up to the first
    ``(`` or ``:`` ("image too large", "no cell found", "truncated JPEG", "MemoryError")."""
    text = message.replace(path, "").lstrip(": ").strip()
    return text.split("(")[0].split(":")[0].strip()[:80] or "error"


def _arrow_schema(classes: list[str]) -> Any:
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("prediction", pa.string()),
                      *[(f"proba.{c}", pa.float64()) for c in classes], ("warning", pa.string()),
                      ("error", pa.string())])


def write_part(df: pd.DataFrame, target: Path, schema: Any) -> None:
    """Write one chunk's rows as the Parquet part ``target`` with ``schema``, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_output(target) as tmp:
        pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), tmp)


def output_metadata(bundle_path: str, digest: str) -> dict[bytes, bytes]:
    """Key/value metadata of a Parquet output: which medfuse and which bundle wrote it."""
    from . import __version__

    return {k.encode(): str(v).encode() for k, v in zip(METADATA_KEYS, (__version__, bundle_path, digest))}


def output_kind(out: Path) -> str:
    """``"csv"`` or ``"parquet"`` from the output's suffix; a :class:`ScoringError` for any other."""
    suffix = out.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ScoringError(f"{out}: output must end in .csv or .parquet")


# ---- the job --------------------------------------------------------------------------------------

def score(bundle: str | Path, inputs: str | Path | pd.DataFrame, out: str | Path, *, jobs: int = 1,
          chunk_size: int = 256, batch_size: int = 256, resume: bool = False, backend: str | None = None,
          scheduler: str | None = None, progress: bool = True, keep_parts: bool = False,
          max_pixels: int | None = None,
          note: Callable[[str], None] | None = None, trust_pickle: bool = False) -> ScoreSummary:
    """Score ``inputs`` with the bundle folder ``bundle`` into ``out`` (``.csv`` or ``.parquet``).

    Parameters
    ----------
    bundle : trained bundle folder (verified once here, then loaded once per worker).
    inputs : folder, glob, CSV manifest, or a DataFrame from :func:`medfuse.inputs.list_inputs`.
    out : output file; one row per input with ``path, prediction, proba.<class>..., warning, error``.
    jobs : worker processes (loky) or, with Dask, parallel tasks (``-1`` = all workers).
    chunk_size : inputs per chunk (the unit of parallelism, progress and resume).
    batch_size : images per pipeline call inside a chunk.
    resume : keep the chunks written by an interrupted run of the same job.
    backend : ``"loky"`` (local processes) or ``"dask"`` (``scheduler`` address required); default:
        ``"dask"`` when a ``scheduler`` is given, else ``"loky"``.
    scheduler : Dask scheduler address, ``tcp://HOST:PORT`` (checked before any work).
    progress : show a progress bar (images/s, ETA) on stderr.
    keep_parts : keep ``<out>.parts/`` after assembling ``out``.
    max_pixels : refuse images whose header claims more pixels (an error row); default
        ``$MEDFUSE_MAX_PIXELS`` or PIL's ``Image.MAX_IMAGE_PIXELS``; 0: no limit.
    note : called with a line of text for notes (a stale lock taken over); default: stderr.

    Raises :class:`medfuse.outputs.OutputBusyError` when another run holds ``<out>.lock`` and
    :class:`medfuse.outputs.OutputError` when ``out`` cannot be written (before any work) or the
    disk fills up (no partial ``out`` is left).
    trust_pickle : also score a format-1 bundle (pickles, which run code when loaded); only for
        bundles you made yourself.

    Every process that scores chunks runs its onnxruntime sessions with :data:`SCORING_THREADS`
    threads, so that all modes give bit-identical probabilities.
    """
    t0 = time.perf_counter()
    out = Path(out)
    kind = output_kind(out)
    if backend is None:
        backend = "dask" if scheduler else "loky"
    if backend not in ("loky", "dask"):
        raise ScoringError(f"unknown backend {backend!r}; use 'loky' or 'dask'")
    if backend == "dask" and not scheduler:
        raise ScoringError("backend 'dask' needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    if backend == "loky" and scheduler:
        raise ScoringError(f"--scheduler {scheduler} is for the Dask backend; drop --backend loky "
                           "(a scheduler address implies --backend dask) or drop --scheduler")
    if scheduler:
        check_scheduler_address(scheduler)
    if chunk_size < 1:
        raise ScoringError(f"chunk_size must be >= 1, got {chunk_size}")
    with guarded_output(out, note=note):
        summary = _score_locked(bundle, inputs, out, kind, jobs, chunk_size, batch_size, resume, backend,
                                scheduler, progress, keep_parts, max_pixels=max_pixels,
                                trust_pickle=trust_pickle)
    summary.seconds = time.perf_counter() - t0
    return summary


def _score_locked(bundle: str | Path, inputs: str | Path | pd.DataFrame, out: Path, kind: str, jobs: int,
                  chunk_size: int, batch_size: int, resume: bool, backend: str, scheduler: str | None,
                  progress: bool, keep_parts: bool, *,
                  max_pixels: int | None = None, trust_pickle: bool = False) -> ScoreSummary:
    """The body of :func:`score`, run while holding the output's lock."""
    in_process = jobs == 1 and backend == "loky"
    # local workers start (and import the scoring stack) while this process verifies the bundle
    pool = None if in_process or backend != "loky" else LocalPool(jobs)
    try:
        return _score_verified(bundle, inputs, out, kind, jobs, chunk_size, batch_size, resume, backend, scheduler,
                               progress, keep_parts, max_pixels, trust_pickle, in_process, pool)
    finally:
        if pool is not None:
            pool.close()


def _score_verified(bundle: str | Path, inputs: str | Path | pd.DataFrame, out: Path, kind: str, jobs: int,
                    chunk_size: int, batch_size: int, resume: bool, backend: str, scheduler: str | None,
                    progress: bool, keep_parts: bool, max_pixels: int | None, trust_pickle: bool, in_process: bool,
                    pool: LocalPool | None) -> ScoreSummary:
    from .bundle import load_verified, verify_bundle

    # verify here, so that a bad bundle fails before any work; load it only if scoring in-process
    path, manifest, digest = verify_bundle(bundle, trust_pickle=trust_pickle)
    loaded = load_verified(path, manifest, digest, threads=SCORING_THREADS) if in_process else None
    bundle_path = str(path)
    task = ChunkTask(bundle_path, digest, batch_size, SCORING_THREADS, max_pixels, trust_pickle)
    if isinstance(inputs, pd.DataFrame):
        table = inputs.copy()
    else:
        table = list_inputs(inputs)
        table = table.drop(columns=[c for c in NOT_TABULAR if c in table.columns])
    if "read_path" not in table:
        table["read_path"] = table["path"]
    parts = out.with_name(out.name + ".parts")
    plan = {"bundle": bundle_path, "manifest_sha256": digest, "chunk_size": chunk_size,
            "n_inputs": len(table), "inputs_sha1": inputs_digest(table)}
    table = prepare_parts(parts, plan, table, resume)
    n = len(table)
    n_chunks = -(-n // chunk_size)
    schema = _arrow_schema([str(c) for c in manifest["classes"]])
    done = {i for i in range(n_chunks) if (parts / part_name(i)).is_file()}
    todo = [i for i in range(n_chunks) if i not in done]
    resumed_rows = sum(min(chunk_size, n - i * chunk_size) for i in done)
    if loaded is not None:
        keep_bundle(bundle_path, digest, loaded)  # in-process: reuse the bundle loaded above

    def chunk_rows(i: int) -> pd.DataFrame:
        return table.iloc[i * chunk_size:(i + 1) * chunk_size].reset_index(drop=True)

    advance, close = progress_bar(n, "scoring", progress, completed=resumed_rows, rate=True)
    try:
        for i, df, _secs in _run_chunks(task, todo, chunk_rows, jobs, backend, scheduler, in_process, pool):
            write_part(df, parts / part_name(i), schema)
            advance(len(df))
    finally:
        close()
    summary = assemble_parts(parts, n_chunks, out, kind, schema, output_metadata(bundle_path, digest))
    summary.n_chunks, summary.chunks_resumed, summary.resumed_rows = n_chunks, len(done), resumed_rows
    if summary.n_scored + summary.n_failed != n:
        raise ScoringError(f"internal: assembled {summary.n_scored + summary.n_failed} rows for {n} inputs")
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    return summary


def part_name(i: int) -> str:
    """File name of chunk ``i``'s part in the parts folder (``part-NNNNNN.parquet``)."""
    return f"part-{i:06d}.parquet"


def prepare_parts(parts: Path, plan: dict[str, Any], table: pd.DataFrame, resume: bool) -> pd.DataFrame:
    """Create (or, with ``resume``, check and reuse) the parts folder; return the input table."""
    plan_file = parts / PLAN
    if resume and plan_file.is_file():
        try:
            old = json.loads(plan_file.read_text())
        except json.JSONDecodeError:
            old = {}
        for key, what in (("manifest_sha256", "bundle"), ("chunk_size", "chunk size"),
                          ("inputs_sha1", "list of inputs"), ("objects", "object finder or crop margin")):
            if old.get(key) != plan.get(key):
                raise ScoringError(f"{parts}: cannot resume: the {what} differs from the interrupted run's; "
                                   "rerun without --resume to start over")
        return pd.read_parquet(parts / INPUTS) if (parts / INPUTS).is_file() else table
    if parts.exists():  # an earlier run's leftovers (no run holds the lock: we do)
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    with atomic_output(parts / INPUTS) as tmp:
        table.to_parquet(tmp, index=False)
    write_text(plan_file, json.dumps(plan, indent=2))
    return table


def _run_chunks(task: ChunkTask, todo: list[int], chunk_rows: Callable[[int], pd.DataFrame], jobs: int,
                backend: str, scheduler: str | None, in_process: bool = False,
                pool: LocalPool | None = None) -> Iterator[tuple[int, pd.DataFrame, float]]:
    if not todo:
        return
    if in_process:
        for i in todo:
            yield score_chunk(task, i, chunk_rows(i))
        return
    if backend == "dask":
        yield from _dask_chunks(task, todo, chunk_rows, jobs, str(scheduler))
        return
    own = pool is None
    pool = LocalPool(jobs) if own else pool
    try:
        yield from windowed(pool.executor.submit, task, todo, chunk_rows, os.getpid(), window=2 * pool.workers)
    finally:
        if own:
            pool.close()


def _warm_worker(parent_pid: int) -> None:
    """Initializer of a local worker: import what loading a bundle and scoring need (the plugins
    through the host), so that this runs while the scoring process verifies the bundle."""
    exit_with_parent(parent_pid)
    from . import bundle as _bundle  # noqa: F401 - import for its side effect (module load)
    from . import trust as _trust  # noqa: F401
    from .host import get_host

    get_host()


class LocalPool:
    """``jobs`` local loky worker processes (``jobs < 1``: one per CPU), each with
    :data:`SCORING_THREADS` native threads; started at once, each importing the scoring stack
    (:func:`_warm_worker`, the initializer) while the caller goes on (verifies the bundle)."""

    def __init__(self, jobs: int):
        from joblib.externals.loky import ProcessPoolExecutor  # its own pool, not joblib's shared one

        self.workers = (os.cpu_count() or 1) if jobs < 1 else jobs
        threads = str(SCORING_THREADS)
        env = {v: threads for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",  # as joblib's
                                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS",  # loky
                                    "NUMEXPR_NUM_THREADS")}  # inner_max_num_threads
        self.executor = ProcessPoolExecutor(max_workers=self.workers, env=env, initializer=_warm_worker,
                                            initargs=(os.getpid(),))
        # Start the workers now rather than at the first submit. Not a warm-up task: loky takes a
        # worker's reference memory after its first task and restarts a worker that grows 300 MB
        # past it, so the first task must be a real chunk (bundle loaded, chunk-sized buffers).
        start = getattr(self.executor, "_ensure_executor_running", None)  # loky internals; optional
        if callable(start):
            start()

    def close(self) -> None:
        self.executor.shutdown(wait=False, kill_workers=True)


def check_scheduler_address(address: str) -> None:
    """Raise :class:`ScoringError` unless ``address`` looks like a Dask scheduler address
    (``tcp://HOST:PORT``, ``HOST:PORT``, or another scheme distributed knows)."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
        from distributed.comm.registry import backends
    except ImportError:
        raise ScoringError("backend 'dask' needs dask[distributed]: pip install 'medfuse[dask]'") from None
    hint = "expected tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786"
    try:
        scheme, loc = parse_address(address)
        if scheme not in backends:
            raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(sorted(backends))}")
        if scheme in ("tcp", "tls", "ws", "wss"):
            _host, port = parse_host_port(loc)
            if not 0 < int(port) < 65536:
                raise ValueError(f"port {port} is out of range")
    except (ValueError, TypeError) as exc:
        raise ScoringError(f"--scheduler {address!r} is not a Dask scheduler address ({exc}); {hint}") from None


def _dask_chunks(task: ChunkTask, todo: list[int], chunk_rows: Callable[[int], pd.DataFrame], jobs: int,
                 scheduler: str) -> Iterator[tuple[int, pd.DataFrame, float]]:
    """Score the chunks on the Dask cluster at ``scheduler``, as futures with ``retries``, with at
    most ``jobs`` (``-1``: twice the cluster's threads) in flight, yielding them as they finish.

    A worker that dies mid-chunk makes the scheduler run its chunks again elsewhere; a chunk
    whose task raises is retried :data:`DASK_RETRIES` times. A chunk that still fails, or a lost
    scheduler, ends the job with a :class:`ScoringError` (the parts written so far stay: --resume).
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ScoringError("backend 'dask' needs dask[distributed]: pip install 'medfuse[dask]'") from None
    try:
        client = Client(scheduler)  # connect timeout: dask config distributed.comm.timeouts.connect
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise ScoringError(f"cannot reach the Dask scheduler at {scheduler}: {exc}; check the address and "
                           "that `dask scheduler` runs there") from None
    with client:
        if jobs >= 1:
            window = jobs
        else:
            window = 2 * max(1, sum(client.nthreads().values()))
        queue = iter(todo)
        running: dict[Any, int] = {}

        def submit_next() -> bool:
            i = next(queue, None)
            if i is None:
                return False
            fut = client.submit(score_chunk, task, i, chunk_rows(i), None, pure=False, retries=DASK_RETRIES,
                                key=f"medfuse-chunk-{i}-{os.getpid()}-{time.time_ns()}")
            running[fut] = i
            ready.add(fut)
            return True

        ready = as_completed()
        try:
            while len(running) < window and submit_next():
                pass
            for fut in ready:
                i = running.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:  # KilledWorker, CancelledError (lost scheduler), the chunk's own error
                    raise ScoringError(f"chunk {i} failed on the Dask cluster at {scheduler} "
                                       f"({type(exc).__name__}: {exc}); the chunks written so far are kept: "
                                       "rerun with --resume") from None
                fut.release()
                yield result
                submit_next()
        finally:
            for fut in running:
                fut.cancel()


def windowed(submit: Callable[..., Any], task: Any, todo: list[int],
              chunk_rows: Callable[[int], pd.DataFrame], parent_pid: int | None,
              window: int = 2, fn: Callable[..., Any] | None = None) -> Iterator[tuple[int, pd.DataFrame, float]]:
    """Score the chunks through ``submit`` (the local pool's executor) with at most ``window`` of
    them submitted at a time, yielding them in submission order. ``fn(task, index, rows,
    parent_pid)`` scores one chunk (default :func:`score_chunk`; object scoring passes its own)."""
    fn = score_chunk if fn is None else fn
    from collections import deque

    pending: deque = deque()
    try:
        for i in todo:
            pending.append(submit(fn, task, i, chunk_rows(i), parent_pid))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def assemble_parts(parts: Path, n_chunks: int, out: Path, kind: str, schema: Any,
              metadata: dict[bytes, bytes] | None = None) -> ScoreSummary:
    """Write ``out`` from the parts in order, atomically (Parquet with ``metadata`` in its
    key/value metadata); count scored and failed rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        return _assemble_into(tmp, parts, n_chunks, out, kind, schema, metadata)


def _assemble_into(tmp: Path, parts: Path, n_chunks: int, out: Path, kind: str, schema: Any,
                   metadata: dict[bytes, bytes] | None) -> ScoreSummary:
    import pyarrow.parquet as pq

    summary = ScoreSummary(out, 0, 0, 0, n_chunks, 0, 0.0)
    out_schema = schema.with_metadata({**(schema.metadata or {}), **(metadata or {})})
    writer = pq.ParquetWriter(tmp, out_schema) if kind == "parquet" else None
    try:
        for i in range(n_chunks):
            part = parts / part_name(i)
            if not part.is_file():
                raise ScoringError(f"{part}: chunk {i} is missing after scoring")
            t = pq.read_table(part, schema=schema)
            if writer is not None:
                writer.write_table(t.replace_schema_metadata(out_schema.metadata))
            else:
                t.to_pandas(integer_object_nulls=True).to_csv(tmp, mode="w" if i == 0 else "a", header=i == 0,
                                                             index=False)  # nullable ints stay ints
            df = t.select(["path", "warning", "error"]).to_pandas()
            failed = df["error"].fillna("").astype(bool)
            warned = df["warning"].fillna("").astype(bool) & ~failed
            summary.n_warned += int(warned.sum())
            for p, w in zip(df["path"][warned], df["warning"][warned]):
                if len(summary.warned_examples) < 3:
                    summary.warned_examples.append(f"{p}: {w}")
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
    finally:
        if writer is not None:
            writer.close()
    return summary
