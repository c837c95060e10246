"""mkdocs hook: the settings and command-line references, generated from the dataclasses and the parser at build time."""

from __future__ import annotations


def cli_reference() -> str:
    """Each ``stformer`` command's ``--help``, as a section of Markdown."""
    from stformer.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    return "\n".join(
        f"### `stformer {name}`\n\n```text\n{command.format_help().strip()}\n```\n" for name, command in commands.items()
    )


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Fill the ``<!-- settings-reference -->`` and ``<!-- cli-reference -->`` markers."""
    if "<!-- settings-reference -->" in markdown:
        from stformer.settings import settings_reference

        markdown = markdown.replace("<!-- settings-reference -->", settings_reference())
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown
