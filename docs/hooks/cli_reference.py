"""mkdocs hook: render ``leditspp``'s argparse parser into the command-line page.

A page holding the line ``<!-- leditspp-cli-reference -->`` gets, in its place, every command's usage,
options (by group, with their help, choices and defaults) and examples, read from the parser that
``leditspp`` itself runs — so the page cannot drift from the program. The worktree's ``src/`` comes
first on the import path, so the docs describe the sources they are built from.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MARKER = "<!-- leditspp-cli-reference -->"
SRC = Path(__file__).resolve().parents[2] / "src"


def _parser() -> argparse.ArgumentParser:
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    from leditspp import cli

    build = getattr(cli, "build_parser", None) or cli._parser
    return build()


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        name = action.metavar or action.dest
        return f"`{name if isinstance(name, str) else ' '.join(name)}`"
    metavar = ""
    if action.nargs != 0:
        formatter = argparse.HelpFormatter("leditspp")
        metavar = " " + formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
    return ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    text = ""
    if action.help:
        params = {**vars(action), "prog": parser.prog}
        if isinstance(action.choices, dict):  # subparsers
            params["choices"] = ", ".join(action.choices)
        text = action.help % params
    if action.required and action.option_strings:
        text += " **required**"
    return _cell(text)


def _options(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for group in parser._action_groups:
        hidden = (argparse._HelpAction, argparse._SubParsersAction)
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS and not isinstance(a, hidden)]
        if not actions:
            continue
        lines += [f"**{group.title}**", "", "| option | what it does |", "| --- | --- |"]
        lines += [f"| {_flags(a)} | {_help(a, parser)} |" for a in actions]
        lines.append("")
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps usage at $COLUMNS: the same on every machine
    try:
        return parser.format_usage().strip()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def render() -> str:
    """The command-line reference as Markdown."""
    top = _parser()
    sub_action = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help for choice in sub_action._choices_actions}
    lines = ["```text", _usage(top), "```", "", top.description or "", ""]
    lines += ["| command | what it does |", "| --- | --- |"]
    lines += [f"| [`{name}`](#leditspp-{name}) | {_cell(summaries.get(name, ''))} |" for name in sub_action.choices]
    lines += ["", *_options(top)]
    for name, parser in sub_action.choices.items():
        lines += [f"## `leditspp {name}` {{#leditspp-{name}}}", "", _cell(summaries.get(name, "")), ""]
        lines += ["```text", _usage(parser), "```", "", *_options(parser)]
        if parser.epilog and parser.epilog != top.epilog:
            lines += ["```text", parser.epilog.strip(), "```", ""]
    if top.epilog:
        lines += ["## Examples", "", "```text", top.epilog.strip(), "```", ""]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs passes page, config, files
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
