"""`medfuse validate`: check a study file against the schema and the installed plugins."""

from __future__ import annotations

from typing import Any

import click

from .common import EXIT_FAILURE, echo_json, profile_flags, verbosity


@click.command("validate")
@click.argument("study", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {ok, error, catalogued, studies: [{name, source, pipelines, blocks, profiles}]}.")
@profile_flags(allow_cpu=False)
@verbosity
def validate(study: str | None, as_json: bool, profile: str | None, quiet: bool, verbose: bool) -> None:
    """Validate STUDY: a TOML file (every study in it), FILE.toml:NAME, or a registry study name.

    Without STUDY, every study it can see, listed by source: the built-in registry.toml, the study
    files (*.toml with [studies.NAME] tables) in the current folder, and the studies that installed
    plugins declare. With none in sight it says where it looked (exit code 1).

    Every check that `compare` runs before loading data: the schema, plugin names, parameter
    names, types and values (each plugin is instantiated, not fitted), how each pipeline's parts fit
    together, ensemble member cycles, the parameters every profile of a study sets, and the
    `[plugins]` catalogue of a file that has one. --profile NAME also checks each study that
    declares NAME with it applied (an error when no study checked declares it); no data is read
    and no GPU is looked for.

    Errors name the file, the key path and what was expected, with a "did you mean" suggestion for
    unknown keys, plugins and parameters. Exit code 1 on the first error. -q prints errors only.

    --json prints one object: "ok" (true/false), "error" (the message, or null), "catalogued"
    (plugins in a `[plugins]` catalogue, or null), "studies" (those checked before any error, each
    with "name", "source", "pipelines", "blocks" and "profiles"), also on an error (exit code 1).
    """
    from pathlib import Path

    from ..errors import MedfuseError
    from ..host import get_host
    from ..study import apply_profile, check_catalogue, check_plugins, load_studies, plugin_studies, resolve_study

    host = get_host()
    checked: list[dict[str, Any]] = []
    listed: int | None = None

    def say(line: str) -> None:
        if not (quiet or as_json):
            click.echo(line)

    try:
        path = Path(study) if study is not None else None
        if path is None:
            files, looked = visible_study_files(Path.cwd())
            studies = []
            for f in files:
                found = list(load_studies(f).values())
                n = check_catalogue(f, host)
                if n:
                    listed = (listed or 0) + n
                say(f"{f}: {len(found)} stud{'y' if len(found) == 1 else 'ies'} ({', '.join(s.name for s in found)})")
                studies += found
            declared = plugin_studies(host)
            if declared:
                say(f"declared by plugins: {', '.join(s.name for s in declared)}")
            studies += declared
            if not studies:
                raise MedfuseError("no studies in sight: " + "; ".join(looked) + ". Give a study file: "
                                   "medfuse validate my-study.toml (docs/studies.md says how to write one)")
            if listed:
                say(f"ok  [plugins]: {listed} plugin(s) catalogued")
        elif study.endswith(".toml") or path.is_dir():
            studies = list(load_studies(path).values())
            listed = check_catalogue(path, host) or None
            if listed:
                say(f"ok  [plugins]: {listed} plugin(s) catalogued")
        else:
            studies = [resolve_study(study)]
        applied = 0
        for s in studies:
            check_plugins(s, host)  # every profile's parameters too
            profiles = f", profiles: {', '.join(s.profiles)}" if s.profiles else ""
            if profile is not None and (profile in s.profiles or len(studies) == 1):
                check_plugins(apply_profile(s, profile), host)  # its parameters: checked just above
                profiles += f" ({profile} applied and checked)"
                applied += 1
            checked.append({"name": s.name, "source": str(s.source), "pipelines": list(s.pipelines),
                            "blocks": list(s.blocks), "profiles": list(s.profiles)})
            say(f"ok  {s.name}: {len(s.pipelines)} pipeline(s) ({', '.join(s.pipelines)}), {len(s.blocks)} "
                f"block(s){profiles}")
        if profile is not None and not applied:
            raise MedfuseError(f"--profile {profile}: none of the {len(studies)} studies checked declares it "
                               f"(declared: {', '.join(sorted({n for s in studies for n in s.profiles})) or 'none'})")
    except Exception as exc:  # noqa: BLE001 - validate reports every error as a message, never a traceback
        message = str(exc) if isinstance(exc, MedfuseError) else _unexpected(exc, checked)
        if as_json:
            echo_json({"ok": False, "error": message, "catalogued": listed, "studies": checked})
            raise SystemExit(EXIT_FAILURE) from None
        raise click.ClickException(message) from None
    if as_json:
        echo_json({"ok": True, "error": None, "catalogued": listed, "studies": checked})


def _unexpected(exc: Exception, checked: list[dict[str, Any]]) -> str:
    """An error that is not a MedfuseError (a plugin's own bug, an OS error) as one message."""
    after = f" after {checked[-1]['name']!r}" if checked else ""
    where = "".join(f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name})"
                    for frame in __import__("traceback").extract_tb(exc.__traceback__)[-1:])
    return (f"validation stopped{after} on an unexpected {type(exc).__name__}: {exc}{where}; "
            "this is a bug in medfuse or a plugin: please report it with this line")


def visible_study_files(folder: Any) -> tuple[list[Any], list[str]]:
    """The study files ``medfuse validate`` sees without an argument: the built-in registry.toml
    (when installed) and ``*.toml`` files of ``folder`` holding ``[studies.NAME]`` tables; with the
    places looked at, as phrases for a message when nothing is found."""
    from ..errors import StudyError
    from ..study import registry_path

    files, looked = [], []
    try:
        files.append(registry_path())
    except StudyError as exc:
        looked.append(f"no built-in registry ({exc})")
    seen = {f.resolve() for f in files}
    local = [f for f in sorted(folder.glob("*.toml")) if f.resolve() not in seen and _holds_studies(f)]
    if not local:
        looked.append(f"no *.toml file with [studies.NAME] tables in {folder}")
    looked.append("no installed plugin declares studies")
    return files + local, looked


def _holds_studies(path: Any) -> bool:
    try:
        return b"[studies." in path.read_bytes()
    except OSError:
        return False
