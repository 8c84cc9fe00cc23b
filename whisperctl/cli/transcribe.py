"""``whisperctl transcribe``: files, directories, globs or ``-`` → txt/srt/vtt/tsv/json."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import EngineConfig, OutputFormat, load_config_file, parse_choice
from ..errors import OutputError, UsageError, WhisperctlError
from . import app
from .options import check_output_file, check_writable_dir, engine_overrides, engine_options

DEFAULTS = EngineConfig()


@app.command()
@engine_options
def transcribe(
    inputs: list[str] = typer.Argument(..., help="Audio files, directories (recursive), globs, or - for stdin."),
    output_format: str = typer.Option("txt", "--output-format", "-f", help="txt | srt | vtt | tsv | json | all."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Write files here (name from the input); default: stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose outputs all exist (resume a run)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML preset (see configs/); flags override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or summary."),
    failures_file: Optional[Path] = typer.Option(None, "--failures", help="Write failed inputs and reasons here (TSV)."),
    **engine: Any,
) -> None:
    """Transcribe audio with Whisper / Distil-Whisper."""
    fmt = parse_choice(OutputFormat, output_format, "--output-format")
    from ..writers import WRITERS, expand_formats, write_atomic

    formats = expand_formats(fmt)
    if overwrite and skip_existing:
        raise UsageError("--overwrite and --skip-existing contradict each other; pick one.")
    if output_dir is None and skip_existing:
        raise UsageError("--skip-existing resumes a run into --output-dir DIR; without one, output goes to stdout.")
    if output_dir is None and len(formats) > 1:
        raise UsageError("--output-format all writes five files per input; add --output-dir DIR.")
    preset: dict[str, Any] = {}
    if config_file is not None:
        preset = load_config_file(config_file)["engine"]
    config = EngineConfig.from_mapping({**preset, **engine_overrides(engine)})
    if output_dir is not None:
        check_writable_dir(output_dir, "--output-dir")
    if failures_file is not None:
        check_output_file(failures_file, "--failures")

    from ..audio import expand_inputs  # numpy: imported only when a command runs, not for --help

    files, problems = expand_inputs(inputs)
    if not files and problems:
        for name, why in problems:
            typer.echo(f"whisperctl: error: {name}: {why}", err=True)
        raise typer.Exit(1)

    from ..engine import Transcriber

    transcriber = Transcriber(config)  # validates and plans: bad flags fail here, before the model loads
    from ..outputs import Claim, OutputDirectory

    # Each input claims its output names exclusively (safe across concurrent runs sharing -o): x, x-2 … and a
    # record in -o/.whisperctl/ says which input owns them (see whisperctl/outputs.py and docs/reliability.md).
    outputs = OutputDirectory(output_dir, [WRITERS[f][0] for f in formats]) if output_dir else None
    todo: list[str] = []
    planned: dict[str, Claim] = {}
    skipped = 0
    for name in files:
        if outputs is None:
            todo.append(name)
            continue
        try:
            claim = outputs.claim(name, overwrite=overwrite)
        except OutputError as exc:
            problems.append((name, str(exc)))
            continue
        existing = claim.existing() if claim.previous is not None else []
        if existing and skip_existing and claim.unchanged and len(existing) == len(claim.paths):
            skipped += 1
            continue
        if existing and not overwrite and not (skip_existing and claim.verifiable):
            # without --overwrite, outputs are replaced only when the input is known to have changed since
            if skip_existing:
                why = "standard input cannot be matched to the outputs of an earlier run; pass --overwrite to replace them."
            else:
                why = "pass --overwrite to replace it or --skip-existing to keep it."
            problems.append((name, f"{existing[0]} exists (this input's, from an earlier run); {why}"))
            continue
        planned[name] = claim
        todo.append(name)

    show_progress = not quiet and sys.stderr.isatty()
    interactive_note = not quiet
    if interactive_note:
        typer.echo(f"whisperctl: {transcriber.plan.attention_reason}", err=True)
    failures = list(problems)
    for name, why in problems:
        typer.echo(f"whisperctl: error: {name}: {why}", err=True)
    done = 0
    audio_seconds = 0.0
    started = time.perf_counter()
    progress_ctx = _progress(len(todo)) if show_progress and todo else None
    try:
        if progress_ctx:
            progress_ctx.__enter__()
        from ..transcript import SegmentReady
        from ..writers import SegmentStream

        # To stdout, txt/srt/vtt are written segment by segment as they settle (a long file shows text within
        # seconds); files in --output-dir are written whole and atomically once the input is done.
        streamed = outputs is None and formats[0] in SegmentStream.FORMATS
        stream: SegmentStream | None = None
        for event in transcriber.events(todo, progress=progress_ctx.advance if progress_ctx else None):
            if isinstance(event, SegmentReady):
                if streamed:
                    if stream is None:
                        stream = SegmentStream(formats[0])
                        sys.stdout.write(stream.header())
                    sys.stdout.write(stream.segment(event.segment))
                    sys.stdout.flush()
                continue
            inp, result = event.source, event.result
            started_stream, stream = stream, None
            if isinstance(result, WhisperctlError):
                failures.append((inp.name, str(result)))
                typer.echo(f"whisperctl: error: {result}" if str(result).startswith(inp.name) else f"whisperctl: error: {inp.name}: {result}", err=True)
                continue
            try:
                if streamed:
                    if started_stream is None:
                        sys.stdout.write(SegmentStream(formats[0]).header())
                        sys.stdout.flush()
                elif outputs is None:
                    sys.stdout.write(WRITERS[formats[0]][1](result))
                    sys.stdout.flush()
                else:
                    claim = planned[inp.name]
                    for f, path in zip(formats, claim.paths):
                        write_atomic(path, WRITERS[f][1](result))
                    claim.written([WRITERS[f][0] for f in formats])
            except OutputError as exc:
                failures.append((inp.name, str(exc)))
                typer.echo(f"whisperctl: error: {exc}", err=True)
                continue
            done += 1
            audio_seconds += result.duration
            if progress_ctx:
                progress_ctx.file_done()
    finally:
        if progress_ctx:
            progress_ctx.__exit__(None, None, None)
    if not quiet and (len(files) > 1 or failures or skipped):
        wall = time.perf_counter() - started
        rtfx = f", RTFx {audio_seconds / wall:.1f}" if wall > 0 and audio_seconds else ""
        typer.echo(
            f"whisperctl: {done} transcribed, {len(failures)} failed, {skipped} skipped; "
            f"{audio_seconds:.1f} s of audio in {wall:.1f} s{rtfx}",
            err=True,
        )
    if failures_file is not None:
        write_atomic(failures_file, failures_tsv(failures))
    if failures:
        raise typer.Exit(1)


class _progress:
    """A rich progress bar on stderr: files, audio seconds, running RTFx. Only on a terminal."""

    def __init__(self, total_files: int):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.total = total_files
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} files"),
            TextColumn("{task.fields[audio]:.0f} s audio"), TextColumn("RTFx {task.fields[rtfx]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.audio = 0.0
        self.t0 = time.perf_counter()

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("transcribing", total=self.total, audio=0.0, rtfx="-")
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def advance(self, name: str, seconds: float) -> None:
        self.audio += max(seconds, 0.0)
        wall = time.perf_counter() - self.t0
        self.progress.update(self.task, audio=self.audio, rtfx=f"{self.audio / wall:.1f}" if wall else "-")

    def file_done(self) -> None:
        self.progress.advance(self.task)


def failures_tsv(failures: list[tuple[str, str]]) -> str:
    """``input<TAB>reason`` rows, quoted as CSV quotes them (a tab, newline or quote in a name stays one field),
    so ``csv.reader(fh, dialect="excel-tab")`` and pandas read every name back exactly."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, dialect="excel-tab", lineterminator="\n")
    writer.writerow(["input", "reason"])
    for name, why in failures:
        writer.writerow([name, " ".join(str(why).split())])
    return buf.getvalue()
