"""``whisperctl doctor``: which options can run here, and why not."""

from __future__ import annotations

import json
import sys

import typer

from . import app

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "INFO": "cyan"}


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    model: str = typer.Option("tiny.en", "--model", help="Model to recommend a batch size for (an alias)."),
    verify_cache: bool = typer.Option(
        False, "--verify-cache", help="Hash every file of every converted model in the cache (slow for large models)."),
) -> None:
    """Check Python, libraries, GPUs and attention kernels; recommend --attn/--dtype and a batch size."""
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
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="whisperctl doctor", show_lines=False, expand=False)
        for col in ("section", "check", "status", "why", "fix"):
            table.add_column(col, overflow="fold")
        last = None
        for c in checks:
            table.add_row(
                escape(c.section) if c.section != last else "", escape(c.name),
                f"[{_STYLE[c.status.value]}]{c.status.value}[/]", escape(c.why), escape(c.fix),
            )
            last = c.section
        console = Console()
        console.print(table)
        fails = sum(1 for c in checks if c.status is Status.FAIL and not c.section.startswith("attention"))
        console.print(
            "[green]The default path works.[/]" if ok else f"[red]Something whisperctl needs is broken ({fails} FAIL).[/]"
        )
    raise typer.Exit(0 if ok else 1)
