"""`medfuse validate`: check a study file against the schema and the installed plugins."""

from __future__ import annotations

from typing import Any

import click

from .common import EXIT_FAILURE, echo_json, verbosity


@click.command("validate")
@click.argument("study", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {ok, error, catalogued, studies: [{name, source, pipelines, blocks}]}.")
@verbosity
def validate(study: str | None, as_json: bool, quiet: bool, verbose: bool) -> None:
    """Validate STUDY: a TOML file (every study in it), FILE.toml:NAME, or a registry study name.

    Without STUDY, every built-in study of the installed registry.toml.

    Every check that `compare` runs before loading data: the schema, plugin names, parameter
    names, types and values (each plugin is instantiated, not fitted), how each pipeline's parts fit
    together, ensemble member cycles, and the `[plugins]` catalogue of a file that has one.

    Errors name the file, the key path and what was expected, with a "did you mean" suggestion for
    unknown keys, plugins and parameters. Exit code 1 on the first error. -q prints errors only.

    --json prints one object: "ok" (true/false), "error" (the message, or null), "catalogued"
    (plugins in a `[plugins]` catalogue, or null), "studies" (those checked before any error, each
    with "name", "source", "pipelines" and "blocks"), also on an error (exit code 1).
    """
    from pathlib import Path

    from ..errors import MedfuseError
    from ..host import get_host
    from ..study import check_catalogue, check_plugins, load_studies, registry_path, resolve_study

    host = get_host()
    checked: list[dict[str, Any]] = []
    listed: int | None = None

    def say(line: str) -> None:
        if not (quiet or as_json):
            click.echo(line)

    try:
        path = registry_path() if study is None else Path(study)
        if study is None or study.endswith(".toml") or path.is_dir():
            studies = list(load_studies(path).values())
            listed = check_catalogue(path, host) or None
            if listed:
                say(f"ok  [plugins]: {listed} plugin(s) catalogued")
        else:
            studies = [resolve_study(study)]
        for s in studies:
            check_plugins(s, host)
            checked.append({"name": s.name, "source": str(s.source), "pipelines": list(s.pipelines),
                            "blocks": list(s.blocks)})
            say(f"ok  {s.name}: {len(s.pipelines)} pipeline(s) ({', '.join(s.pipelines)}), {len(s.blocks)} block(s)")
    except MedfuseError as exc:
        if as_json:
            echo_json({"ok": False, "error": str(exc), "catalogued": listed, "studies": checked})
            raise SystemExit(EXIT_FAILURE) from None
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json({"ok": True, "error": None, "catalogued": listed, "studies": checked})
