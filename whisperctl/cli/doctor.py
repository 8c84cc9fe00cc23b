"""``whisperctl doctor``: which options can run here, and why not."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import TYPE_CHECKING

import typer

from . import app
from .options import set_verbosity

if TYPE_CHECKING:
    from rich.text import Text

    from ..doctor import Check

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "INFO": "cyan"}


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    model: str = typer.Option("tiny.en", "--model", help="Model to recommend a batch size for (an alias)."),
    verify_cache: bool = typer.Option(
        False, "--verify-cache", help="Hash every file of every converted model in the cache (slow for large models)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Every check's full details and fix, not only the problems'."),
) -> None:
    """Check Python, libraries, GPUs and attention kernels; recommend --attn/--dtype and a batch size."""
    set_verbosity(verbose)
    from .. import models
    from ..doctor import Status, gather, healthy, run_checks, to_json
    from ..eligibility import probe

    models.resolve(model)  # an unknown name is a usage error (exit 2), not a silently missing recommendation

    env = probe(check_flash_attn_import=True)
    checks = run_checks(env, gather(verify_cache=verify_cache), model=model)
    ok = healthy(checks)
    if as_json:
        sys.stdout.write(json.dumps(to_json(checks, env), indent=2) + "\n")
    else:
        from rich.console import Console

        console = Console(highlight=False)
        for line in render(checks, console.width, verbose):
            console.print(line, soft_wrap=True)  # lines are already fitted to the width
        fails = sum(1 for c in checks if c.status is Status.FAIL and not c.section.startswith("attention"))
        hint = "" if verbose else " (-v: details and fixes)"
        console.print(
            f"[green]The default path works.[/]{hint}" if ok else f"[red]Something whisperctl needs is broken ({fails} FAIL).[/]{hint}"
        )
    raise typer.Exit(0 if ok else 1)


_NAME_WIDTH = 18  # a longer name (the recommendation's flags) pushes its own row's text right, not every row's
_INDENT = "  "


def render(checks: list["Check"], width: int, verbose: bool = False) -> list["Text"]:
    """One line per check under its section: status, name and the reason, cut to ``width``. Under a WARN or FAIL
    row, its full reason and fix; under the recommendation (the answer doctor exists to give), its whole reason;
    with ``verbose``, every row's full reason and fix. No line is longer than ``width``."""
    from rich.text import Text

    width = max(width, 40)
    name_width = min(_NAME_WIDTH, max((len(c.name) for c in checks), default=0))
    lines: list[Text] = []
    last = None
    for c in checks:
        if c.section != last:
            lines.append(Text(c.section, style="bold"))
            last = c.section
        problem = c.status.value in ("WARN", "FAIL")
        head = f"{_INDENT}{c.status.value:<4}  {c.name:<{name_width}}  "
        indent = " " * (len(_INDENT) + 6 + name_width + 2)
        if len(indent) > width - 30:  # a narrow terminal: details start under the name instead
            indent = " " * (len(_INDENT) + 6)
        # " — " separates a reason from its derivation (the recommendation's "— auto → sdpa (…)")
        why = c.why if verbose or problem else c.why.split(" — ")[0]
        if verbose or problem or c.section == "recommendation":
            if len(c.name) > name_width:  # a name longer than its column: the reason goes below it
                rows = [_cut(head, width)] + _wrap(why, width, indent, indent)
            else:
                rows = _wrap(why, width, head, indent) or [head.rstrip()]
        else:
            rows = [_cut(head + why, width)]
        row_lines = [Text(r) for r in rows]
        row_lines[0].stylize(_STYLE[c.status.value], len(_INDENT), len(_INDENT) + len(c.status.value))
        if c.fix and (verbose or problem):
            for r in _wrap(c.fix, width, indent + "fix: ", indent + "     "):
                row_lines.append(Text(r, style="dim"))
        lines += row_lines
    return lines


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def _cut(text: str, width: int) -> str:
    text = text.rstrip()
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
