"""`medfuse plugins`: list discovered plugins, or show one in full."""

from __future__ import annotations

import re

import click
from rich.markup import escape
from rich.table import Table

from .common import console as make_console
from .common import echo_json, verbosity


@click.group("plugins", invoke_without_command=True)
@click.option("--strict", is_flag=True, help="Fail (exit 1) when any plugin module fails to load.")
@click.option("--kind", type=click.Choice(["transform", "extractor", "selector", "mask", "classifier", "loader"]),
              help="Only list plugins of this kind.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {plugins: [{name, kind, version, origin, status, error}], skipped: [names]}.")
@verbosity
@click.pass_context
def plugins(ctx: click.Context, strict: bool, kind: str | None, as_json: bool, quiet: bool, verbose: bool) -> None:
    """List every plugin with kind, version, origin package and status.

    Plugins come from the `medfuse` entry-point group; built-in ones use the same group as third-party
    packages. A module that fails to load is listed as failed with its error and the rest still load.
    Set MEDFUSE_PLUGINS=name1,name2 to allow only those third-party entry points.

    --json prints {"plugins": [...], "skipped": [...]}; each plugin has the keys name, kind,
    version, origin, status ("ok", "failed" or another load status) and error (null when ok).
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..errors import PluginError
    from ..host import PluginHost

    try:
        host = PluginHost(strict=strict)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        rows = [{"name": r.name, "kind": r.kind, "version": r.version, "origin": r.origin,
                 "status": "ok" if r.ok else r.status, "error": None if r.ok else r.error}
                for r in (host.records[n] for n in host.names(kind))]
        rows += [{"name": f.name, "kind": f.kind, "version": f.version, "origin": f.origin, "status": "failed",
                  "error": f.error} for f in host.failures]
        echo_json({"plugins": rows, "skipped": list(host.skipped)})
        return
    console = make_console()
    table = Table(title="medfuse plugins", show_lines=False)
    for col in ("name", "kind", "version", "origin", "status"):
        table.add_column(col)
    for name in host.names(kind):
        r = host.records[name]
        status = "[green]ok[/]" if r.ok else f"[yellow]{escape(r.status)}[/]: {escape(str(r.error))}"
        table.add_row(*_cells(r.name, r.kind, r.version, r.origin), status)
    for f in host.failures:
        table.add_row(*_cells(f.name, f.kind, f.version, f.origin), f"[red]failed[/]: {escape(f.error.splitlines()[0])}")
    console.print(table)
    if host.skipped and not quiet:
        console.print(f"skipped by MEDFUSE_PLUGINS: {', '.join(host.skipped)}")
    if host.failures and not quiet:
        console.print(f"[red]{len(host.failures)} plugin(s) failed to load[/]; the others are usable.")


@plugins.command("guide")
def guide() -> None:
    """Print the guide to writing plugins (docs/plugins.md of medfuse's source, shipped with the
    package): each kind's contract, the loader helpers, the cache, the conformance kit, the SDK."""
    from ..util.shipped import PACKAGE, shipped_file

    path = shipped_file("docs/plugins.md")
    if path is None:
        raise click.ClickException(f"the plugin guide is missing from this installation ({PACKAGE / 'docs'}); "
                                   "reinstall medfuse (a wheel ships it as medfuse/docs/plugins.md)")
    click.echo(path.read_text(encoding="utf-8"), nl=False)


@plugins.command("show")
@click.argument("name")
@verbosity
def show(name: str, quiet: bool, verbose: bool) -> None:
    """Print a plugin's description, parameters (type, default, doc) and origin."""
    import inspect

    from ..contracts import split_param_section
    from ..errors import UnknownPluginError
    from ..host import get_host

    host = get_host()
    try:
        cls = host.get(name)
    except UnknownPluginError as exc:
        raise click.ClickException(str(exc)) from None
    record = host.records[name]
    console = make_console()
    console.print(f"[bold]{escape(cls.name)}[/] ({escape(f'{cls.kind}, version {cls.version}) from {record.origin}')}")
    if getattr(cls, "block", ""):
        console.print(f"feature block: {cls.block}.<feature>", markup=False)
    if cls.extras:
        console.print(f"optional dependencies: {', '.join(cls.extras)}", markup=False)
    console.print()
    text = split_param_section(inspect.getdoc(cls))[0]  # its Parameters section is the table below
    for paragraph in paragraphs(text or "(no documentation)"):
        console.print(paragraph, markup=False, highlight=False)
        console.print()
    table = Table(title="parameters")
    for col in ("name", "type", "default", "doc"):
        table.add_column(col)
    for spec in cls.param_schema().values():
        table.add_row(*_cells(spec.name, spec.type, repr(spec.default), spec.doc))
    console.print(table)


def _cells(*values: object) -> list[str]:
    """Plugin-supplied text as table cells, markup escaped: a doc such as 'levels of [cytoplasm,
    nucleus]' must print as written, not be read as a rich style tag and vanish."""
    return [escape(str(v)) for v in values]


_ITEM = re.compile(r"\s*([*+-]|\d+[.)]) ")
_RULE = re.compile(r"\s*[-=]{3,}\s*$")


def paragraphs(doc: str) -> list[str]:
    """A docstring's paragraphs with the source's line breaks removed, so the console wraps each at
    its own width instead of cutting sentences; list items and section rules keep their own lines,
    indented (literal) blocks are kept as written."""
    out = []
    for block in re.split(r"\n\s*\n", doc.strip()):
        lines = block.splitlines()
        if lines[0][:1].isspace():
            out.append(block)
            continue
        merged: list[str] = []
        for line in lines:
            if not merged or _ITEM.match(line) or _RULE.match(line) or _RULE.match(merged[-1]):
                merged.append(line.rstrip())
            else:
                merged[-1] += " " + line.strip()
        out.append("\n".join(merged))
    return out
