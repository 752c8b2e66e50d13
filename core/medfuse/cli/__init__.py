"""The ``medfuse`` command line. Sub-commands live in their own modules and load lazily, so
``medfuse plugins`` or a classical ``medfuse extract`` never imports TensorFlow."""

from __future__ import annotations

import importlib
import sys

import click

from .common import EXIT_CODES, exit_code_table

__all__ = ["COMMANDS", "EXIT_CODES", "main"]

# name -> "module:function" (a click command); add a line here when adding a verb.
COMMANDS: dict[str, str] = {
    "plugins": "medfuse.cli.plugins_cmd:plugins",
    "validate": "medfuse.cli.validate_cmd:validate",
    "data": "medfuse.cli.data_cmd:data",
    "demo": "medfuse.cli.demo_cmd:demo",
    "extract": "medfuse.cli.extract_cmd:extract",
    "compare": "medfuse.cli.compare_cmd:compare",
    "run": "medfuse.cli.compare_cmd:run",
    "train": "medfuse.cli.score_cmd:train",
    "score": "medfuse.cli.score_cmd:score",
    # analyst-api (issue 14)
    "runs": "medfuse.cli.runs_cmd:runs",
    "new-plugin": "medfuse.cli.newplugin_cmd:new_plugin",
    # segmentation bundles (issue 17)
    "train-seg": "medfuse.cli.segment_cmd:train_seg",
    "segment": "medfuse.cli.segment_cmd:segment",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise

            @click.command(cmd_name, help="(not available in this build)")
            def missing() -> None:
                raise click.ClickException(f"'{cmd_name}' is not available: {module_name} is missing")

            return missing
        return getattr(module, attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog=exit_code_table())
@click.version_option(package_name="medfuse")
def main() -> None:
    """medfuse: classical and deep features for medical-image studies, side by side.

    \b
    Typical session:
      medfuse demo                          # whole flow on built-in synthetic cells
      medfuse plugins                       # what is installed
      medfuse data PATH                     # sample table + data report of a folder/manifest
      medfuse compare pbc-cells --data ROOT # classical vs deep vs fused, one report
      medfuse train pbc-cells --pipeline fused --data ROOT --out bundle/
      medfuse score bundle/ FOLDER --out scores.parquet --jobs 2

    ROOT defaults to $MEDFUSE_DATA. Every command has --help. In every command that has them,
    -q/--quiet means results and errors only, -v/--verbose also shows library warnings and logs,
    -j/--jobs N sets worker processes (-1 = every core) and -o/--out names what is written. Output
    that is not a terminal is plain text and never truncated. Reference: docs/cli.md.
    """


def run() -> None:  # pragma: no cover - console entry when called as a module
    sys.exit(main())
