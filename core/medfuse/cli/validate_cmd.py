"""`medfuse validate`: check a study file against the schema and the installed plugins."""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("study", required=False)
def validate(study: str | None) -> None:
    """Validate STUDY: a TOML file (every study in it), FILE.toml:NAME, or a registry study name.

    Without STUDY, every built-in study of the installed registry.toml.

    Errors name the file, the key path and what was expected, with a "did you mean" suggestion for
    unknown keys, plugins and parameters. Exit code 1 on the first error.
    """
    from ..errors import MedfuseError
    from ..host import get_host
    from ..study import check_plugins, load_studies, registry_path, resolve_study

    host = get_host()
    try:
        if study is None:
            studies = list(load_studies(registry_path()).values())
        elif study.endswith(".toml"):
            studies = list(load_studies(study).values())
        else:
            studies = [resolve_study(study)]
        for s in studies:
            check_plugins(s, host)
            click.echo(f"ok  {s.name}: {len(s.pipelines)} pipeline(s) "
                       f"({', '.join(s.pipelines)}), {len(s.blocks)} block(s)")
    except MedfuseError as exc:
        raise click.ClickException(str(exc)) from None
