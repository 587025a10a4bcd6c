"""MkDocs hooks: pages generated from the code at build time, and docstring roles shown as code.

- ``reference/config.md``: every config key with its default and meaning, from the schema's public
  listing ``mmcr.run.config.describe_fields()``;
- ``reference/cli.md``: the ``--help`` of every ``mmcr`` command, from ``mmcr.cli.build_parser()``;
- ``reference/registries.md``: every registry's names, docs and options, as ``mmcr list`` prints them;
- ``benchmarks/RESULTS.md`` and its plots, served from ``benchmarks/`` where they are kept.

The docs describe this checkout's code, so ``src/`` comes first on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# Sphinx-style roles in docstrings (:class:`X`, :func:`~a.b`) arrive as ":class:<code>X</code>", and the
# "::" that introduces a literal block as a paragraph ending in "::".
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc):(<code>)~?")
_LITERAL_INTRO = re.compile(r"::</p>")


def _value(v) -> str:
    return "`" + json.dumps(v) + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    from mmcr.run.config import describe_fields

    sections: dict[str, list[str]] = {}
    for path, default, doc in describe_fields():
        section = path.split(".")[0] if "." in path else "top level"
        sections.setdefault(section, []).append(f"| `{path}` | {_value(default)} | {_cell(doc)} |")
    lines = [
        "# Configuration",
        "",
        "Every key of a run's config (`mmcr.run.RunConfig`), with its default and what it means; set any of them "
        "in a YAML file or with `--set key=value`. `mmcr pretrain --help-config` prints the same list. Generated "
        "from the schema when the site is built.",
        "",
    ]
    for section, rows in sections.items():
        lines += [f"## {section}", "", "| key | default | meaning and valid values |", "|---|---|---|", *rows, ""]
    return "\n".join(lines + command_settings())


def command_settings() -> list[str]:
    """The settings section of every other command (``--help-config`` of each), from :mod:`mmcr.schema`."""
    from mmcr import schema
    from mmcr.data.settings import ShardSettings
    from mmcr.evaluate.detection.config import DetectionConfig
    from mmcr.evaluate.settings import (
        BrainscoreExportSettings,
        KnnSettings,
        LinearSettings,
        SemiSettings,
        TransferSettings,
    )
    from mmcr.geometry.settings import AnalysisSettings

    commands = [("mmcr eval knn", KnnSettings), ("mmcr eval linear", LinearSettings),
                ("mmcr eval semi", SemiSettings), ("mmcr eval transfer", TransferSettings),
                ("mmcr eval detection", DetectionConfig), ("mmcr analyze", AnalysisSettings),
                ("mmcr export brainscore", BrainscoreExportSettings), ("mmcr data shard", ShardSettings)]
    lines = ["## Settings of the other commands", "",
             "Each command also takes `--config FILE.yaml`, `--set key=value`, `--help-config` and `--print-config` "
             "over these keys; its own flags set the same fields.", ""]
    for command, cls in commands:
        rows = [f"| `{i.key}` | {_value(i.default)} | {_cell('; '.join(p for p in (i.doc, i.valid) if p))} |"
                for i in schema.describe(cls)]
        lines += [f"### {command}", "", "| key | default | meaning and valid values |", "|---|---|---|", *rows, ""]
    return lines


def _subcommands(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:  # argparse keeps its subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from _subcommands(sub)


def cli_reference() -> str:
    from mmcr.cli import build_parser

    os.environ["COLUMNS"] = "80"  # argparse wraps help at the terminal's width
    lines = ["# Command line", "", "The `--help` of every `mmcr` command, generated when the site is built.", ""]
    for parser in _subcommands(build_parser()):
        lines += [f"## `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def registries_reference() -> str:
    from mmcr.cli import registries
    from mmcr.registry import describe_options

    lines = ["# Registries", "", "Every name a config or command may choose, from the registries themselves (what "
             "`mmcr list` prints), with each entry's options, their defaults and valid values. Generated when the "
             "site is built.", ""]
    for reg in registries():
        lines += [f"## {reg.plural} ({reg.kind})", "", "| name | what it is | options |", "|---|---|---|"]
        for e in reg.entries():
            if e.options is None:
                opts = "free-form, checked by the builder" if e.loose else "none"
            else:
                opts = "<br>".join(f"`{i.key}` = {_value(i.default)}" + ("" if e.loose else f" ({_cell(i.valid)})")
                                   for i in describe_options(e.options))
            doc = _cell(e.doc).replace("[", "\\[")  # root/[split/][class/] is no markdown link
            lines.append(f"| `{e.name}` | {doc} | {opts} |")
        lines.append("")
    return "\n".join(lines)


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "reference/config.md", content=config_reference()))
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    files.append(File.generated(config, "reference/registries.md", content=registries_reference()))
    bench = ROOT / "benchmarks"
    for path in [bench / "RESULTS.md", *sorted(bench.glob("*.png"))]:
        files.append(File(f"benchmarks/{path.name}", str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_content(html: str, page, config, files) -> str:
    return _LITERAL_INTRO.sub(":</p>", _ROLE.sub(r"\1", html))
