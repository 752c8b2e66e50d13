"""`medfuse validate`: check a study file against the schema and the installed plugins."""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("study", required=False)
def validate(study: str | None) -> None:
    """Validate STUDY: a TOML file (every study in it), FILE.toml:NAME, or a registry study name.

    Without STUDY, every built-in study of the installed registry.toml.

    Every check that `compare` runs before loading data: the schema, plugin names, parameter
    names, types and values (each plugin is instantiated, not fitted), how each pipeline's parts fit
    together, ensemble member cycles, and the `[plugins]` catalogue of a file that has one.

    Errors name the file, the key path and what was expected, with a "did you mean" suggestion for
    unknown keys, plugins and parameters. Exit code 1 on the first error.
    """
    from pathlib import Path

    from ..errors import MedfuseError
    from ..host import get_host
    from ..study import check_catalogue, check_plugins, load_studies, registry_path, resolve_study

    host = get_host()
    try:
        path = registry_path() if study is None else Path(study)
        if study is None or study.endswith(".toml") or path.is_dir():
            studies = list(load_studies(path).values())
            listed = check_catalogue(path, host)
            if listed:
                click.echo(f"ok  [plugins]: {listed} plugin(s) catalogued")
        else:
            studies = [resolve_study(study)]
        for s in studies:
            check_plugins(s, host)
            click.echo(f"ok  {s.name}: {len(s.pipelines)} pipeline(s) "
                       f"({', '.join(s.pipelines)}), {len(s.blocks)} block(s)")
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
