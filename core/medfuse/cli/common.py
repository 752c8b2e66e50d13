"""What every ``medfuse`` command shares: exit codes, the -q/-v/-j/-o options, ``--set`` overrides, ``--profile``,
consoles that never truncate when piped, and keeping library noise away from the user."""

from __future__ import annotations

import functools
import json
import logging
import os
import tomllib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# ---- exit codes: the one table (shown in `medfuse --help` and docs/cli.md) ---------------------

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

# click's own exceptions exit with EXIT_FAILURE (ClickException) and EXIT_USAGE (UsageError)
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "error (bad study, data, bundle, output), or nothing done (all pipelines failed, "
                  "nothing scored or loaded, plugins --strict with a failed plugin)",
    EXIT_USAGE: "usage error: unknown option, bad value, unknown --set key, unknown pipeline",
    EXIT_PARTIAL: "--fail-on-error: the run finished but at least one pipeline failed",
}


def exit_code_table() -> str:
    """The exit-code table as help text (a click ``\\b`` block keeps its lines)."""
    return "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


class PartialFailure(click.ClickException):
    """Some pipelines failed and ``--fail-on-error`` was given."""

    exit_code = EXIT_PARTIAL


# ---- library noise ----------------------------------------------------------------------------

_LOKY_WORKER_WARNING = "A worker stopped while some jobs were given to the executor"


def quiet_libraries(verbose: bool = False) -> None:
    """Keep library noise from the user unless ``verbose``; call before TensorFlow is imported.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` (TensorFlow's C++ ``E0000 ... NodeDef mentions attribute
    use_unbounded_threadpool`` lines; inherited by worker processes) unless the user set it,
    silences loky's worker-stopped ``UserWarning`` and absl's Python warnings.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=_LOKY_WORKER_WARNING, category=UserWarning)
    logging.getLogger("absl").setLevel(logging.ERROR)


# ---- shared options ---------------------------------------------------------------------------

class JobsType(click.ParamType):
    """A job count: N >= 1, or -1 for every core."""

    name = "N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            n = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an integer (N >= 1, or -1 for every core)", param, ctx)
        if n == -1 or n >= 1:
            return n
        self.fail(f"{n}: give N >= 1, or -1 for every core", param, ctx)


JOBS = JobsType()


def resolve_jobs(jobs: int | None, default: int = 1) -> int:
    """``None`` -> ``default``; ``-1`` -> every core; else ``jobs``."""
    n = default if jobs is None else jobs
    return (os.cpu_count() or 1) if n == -1 else n


def jobs_option(default: int | None = 1, help: str = "Parallel worker processes") -> Callable:
    """``-j/--jobs N`` (-1 = every core)."""
    shown = "" if default is None else f"; default {default}"
    return click.option("--jobs", "-j", type=JOBS, default=default, help=f"{help} (-1 = every core{shown}).")


def out_option(help: str, **kwargs: Any) -> Callable:
    """``-o/--out`` (each command says what it writes)."""
    kwargs.setdefault("default", None)
    return click.option("--out", "-o", help=help, **kwargs)


def echo_bundle_written(title: str, lines: list[str], manifest: dict, samples: str, note: str) -> None:
    """Print what ``train``/``train-seg`` wrote: ``title``, then (indented) ``lines``, the training data
    (``samples`` and the fingerprint's first 12 characters) and ``<note>: <manifest's cv_note>``."""
    fingerprint = manifest["training_data"]["fingerprint"][:12]
    click.echo(title)
    for line in [*lines, f"training data: {samples}, fingerprint {fingerprint}",
                 f"{note}: {manifest.get('cv_note', '')}"]:
        click.echo(f"  {line}")


def bundle_and_inputs(fn: Callable) -> Callable:
    """Add the ``BUNDLE`` (an existing folder) and ``INPUT`` arguments of ``score`` and ``segment``."""
    fn = click.argument("inputs", metavar="INPUT")(fn)
    return click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))(fn)


def verbosity(fn: Callable) -> Callable:
    """Add ``-q/--quiet`` and ``-v/--verbose`` to a command; quiets library noise before the body runs.

    -q: no progress display or notes, only results and errors. -v: also library warnings and logs.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("quiet") and kwargs.get("verbose"):
            raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
        quiet_libraries(bool(kwargs.get("verbose")))
        return fn(*args, **kwargs)

    wrapper = click.option("--verbose", "-v", is_flag=True,
                           help="Also show library warnings and logs (TensorFlow, loky, absl).")(wrapper)
    return click.option("--quiet", "-q", is_flag=True, help="No progress display or notes: results and errors only.")(
        wrapper)


# ---- output -----------------------------------------------------------------------------------

PIPE_WIDTH = 100_000


def console(stderr: bool = False, quiet: bool = False) -> Any:
    """A rich Console that wraps to the terminal, and never wraps or truncates when not a terminal."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, quiet=quiet, width=None if tty else PIPE_WIDTH, soft_wrap=not tty)


def echo_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON on stdout (the ``--json`` output of a command); numpy
    numbers as numbers, NaN and infinities as null (:func:`medfuse.util.jsonable.to_jsonable`)."""
    from ..util.jsonable import to_jsonable

    click.echo(json.dumps(to_jsonable(payload, finite=True), indent=2, allow_nan=False))


# ---- reader flags (--bits, --percentiles, --pixel-size-um) ------------------------------------

def reader_flags(overrides: str = "") -> Callable:
    """The reader flags ``--bits``, ``--percentiles`` and ``--pixel-size-um`` of a command (read them
    with :func:`read_options`); ``overrides`` ends each help text, e.g. "overrides --study's"."""
    tail = f" ({overrides})" if overrides else ""
    flags = [
        click.option("--bits", type=int, default=None,
                     help="Reader: bit depth of integer images whose file does not state it (12 for 12-bit "
                          f"PNG/TIFF){tail}."),
        click.option("--percentiles", default=None, metavar="LOW,HIGH",
                     help=f"Reader: window each image on its own percentiles, e.g. 1,99{tail}."),
        click.option("--pixel-size-um", "pixel_size_um", type=float, default=None,
                     help=f"Reader: micrometres per pixel for files without a spacing (physical-unit features){tail}."),
    ]

    def decorate(fn: Callable) -> Callable:
        for flag in reversed(flags):
            fn = flag(fn)
        return fn

    return decorate


def read_options(bits: int | None, percentiles: str | None, pixel_size_um: float | None) -> Any:
    """The reader flags ``--bits``, ``--percentiles LOW,HIGH`` and ``--pixel-size-um`` as
    :class:`medfuse.intensity.ReadOptions` (a bad value is a usage error naming its flag)."""
    from ..intensity import ReadOptions

    pct = None
    if percentiles:
        try:
            pct = tuple(float(v) for v in percentiles.split(","))
        except ValueError:
            pct = ()
        if len(pct) != 2:
            raise click.BadParameter(f"{percentiles!r}: expected LOW,HIGH, e.g. 1,99", param_hint="--percentiles")
    try:
        return ReadOptions(bits=bits, percentiles=pct, pixel_size_um=pixel_size_um)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# ---- --set BLOCK.PARAM=VALUE ------------------------------------------------------------------

def set_option(what: str = "BLOCK") -> Callable:
    return click.option("--set", "sets", multiple=True, metavar=f"{what}.PARAM=VALUE",
                        help=f"Override a parameter of a {what.lower()} (TOML value), repeatable: "
                             "--set texture.levels=16 --set \"colour.spaces=['lab']\". Recorded in the output.")


def parse_sets(values: tuple[str, ...] | list[str], what: str = "BLOCK") -> dict[str, dict[str, Any]]:
    """``("texture.levels=16", "colour.spaces=['lab']")`` -> ``{"texture": {"levels": 16}, ...}``.

    Values are TOML scalars or arrays; a bare word is a string.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        name, dot, param = key.strip().partition(".")
        if not sep or not dot or not name or not param.strip():
            raise click.BadParameter(f"{item!r}: expected {what}.PARAM=VALUE, e.g. texture.levels=16",
                                     param_hint="--set")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out.setdefault(name, {})[param.strip()] = value
    return out


def apply_block_sets(study: Any, values: tuple[str, ...] | list[str], host: Any) -> tuple[Any, dict[str, Any]]:
    """``--set BLOCK.PARAM=VALUE`` applied to a copy of ``study``'s blocks (and to classifiers that name
    the block's network, ``network = "BLOCK"``): ``(study, overrides)``.

    An unknown block or parameter is a usage error naming what exists, with a did-you-mean.
    """
    from ..errors import did_you_mean
    from ..study import with_params

    sets = parse_sets(values)
    if not sets:
        return study, {}
    for block, params in sets.items():
        spec = study.blocks.get(block)
        if spec is None:
            raise click.BadParameter(f"study {study.name!r} has no block {block!r}"
                                     f"{did_you_mean(block, study.blocks)}; blocks: "
                                     f"{', '.join(study.blocks) or '(none)'}", param_hint="--set")
        schema = host.get(spec.plugin).param_schema()
        for param in params:
            if param not in schema:
                raise click.BadParameter(f"block {block!r} (plugin {spec.plugin!r}) has no parameter {param!r}"
                                         f"{did_you_mean(param, schema)}; parameters: {', '.join(schema)}",
                                         param_hint="--set")
    return with_params(study, sets), sets


# ---- --profile NAME / --allow-cpu -------------------------------------------------------------

def profile_flags(allow_cpu: bool = True) -> Callable:
    """``--profile NAME`` (and, for a command that runs the study, ``--allow-cpu``) of a command
    taking a study (read them with :func:`select_profile`)."""
    def decorate(fn: Callable) -> Callable:
        if allow_cpu:
            fn = click.option("--allow-cpu", is_flag=True,
                              help="With --profile: run a profile that requires a GPU even when TensorFlow sees "
                                   "none (slow: such recipes can take hours on a CPU).")(fn)
        return click.option("--profile", default=None, metavar="NAME",
                            help="Apply the study's profile NAME ([studies.STUDY.profiles.NAME]: e.g. a larger CNN "
                                 "recipe for a GPU); recorded in the output. Default: the study as written, whose "
                                 "figures are the reported ones.")(fn)

    return decorate


def select_profile(study: Any, profile: str | None, allow_cpu: bool, host: Any) -> tuple[Any, dict[str, Any] | None]:
    """``--profile``: ``(study with the profile applied, the record a run keeps of it)``; without one,
    ``(study, None)`` unchanged. The profile's parameters are checked against the plugins and a
    profile requiring a GPU is refused when none is visible (unless ``allow_cpu``): all before any
    data is read."""
    from ..devices import check_profile_devices
    from ..study import apply_profile, check_profile

    if profile is None:
        return study, None
    applied = apply_profile(study, profile)  # an unknown name: a StudyError listing the study's profiles
    check_profile(study, applied.profile, host)
    return applied, check_profile_devices(applied, allow_cpu)
