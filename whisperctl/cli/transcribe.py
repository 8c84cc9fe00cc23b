"""``whisperctl transcribe``: files, directories, globs or ``-`` → txt/srt/vtt/tsv/json."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import EngineConfig, OutputFormat, parse_choice
from ..presets import load_config_file
from ..errors import OutputError, UsageError, WhisperctlError
from . import app
from .options import check_output_file, check_writable_dir, engine_overrides, engine_options, set_verbosity, verbose_option

DEFAULTS = EngineConfig()


@app.command()
@engine_options
def transcribe(
    inputs: list[str] = typer.Argument(..., help="Audio files, directories (recursive), globs, or - for stdin."),
    output_format: str = typer.Option("txt", "--output-format", "-f", help="txt | srt | vtt | tsv | json | all."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Write files here (name from the input); default: stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose outputs all exist and are current (made from the same content with the same output options); redo the others (resume a run)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML preset (see configs/); flags override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display, summary or notes; errors only."),
    verbose: bool = verbose_option(),
    failures_file: Optional[Path] = typer.Option(None, "--failures", help="Write failed inputs and reasons here (TSV)."),
    strict: bool = typer.Option(False, "--strict", help="Count an input whose transcript has warnings (a repetition loop, every temperature failed) as failed: exit 1, listed in --failures; its outputs are still written."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="auto|ADDRESS", help="Run on a Ray cluster (extra whisperctl[ray]): auto (RAY_ADDRESS, a cluster joined with `ray start`, or a new local one) or its address. Needs -o."),
    workers: Optional[int] = typer.Option(None, "--workers", help="--ray: worker actors, one model each (default: as many as the cluster fits)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="--ray: GPUs per worker (fractions share a GPU); 0 = CPU workers."),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker", help="--ray: CPUs per worker (default 1; also its torch threads)."),
    server: Optional[str] = typer.Option(None, "--server", envvar="WHISPERCTL_SERVER", metavar="URL", help="Send the files to a running `whisperctl serve` (or set WHISPERCTL_SERVER) instead of loading a model here; decoding options go with them (key: WHISPERCTL_API_KEY)."),
    **engine: Any,
) -> None:
    """Transcribe audio with Whisper / Distil-Whisper."""
    set_verbosity(verbose, quiet)
    fmt = parse_choice(OutputFormat, output_format, "--output-format")
    from ..writers import expand_formats

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

    from ..inputs import expand_inputs  # numpy: imported only when a command runs, not for --help

    if ray is None and (workers is not None or gpus_per_worker or cpus_per_worker is not None):
        raise UsageError("--workers, --gpus-per-worker and --cpus-per-worker size a Ray run; add --ray auto|ADDRESS.")
    if ray is not None:
        if output_dir is None:
            raise UsageError("--ray: workers write the outputs; add --output-dir DIR.")
        from ..cluster import require_ray

        require_ray()
    if "-" in inputs:
        from ..audio import STDIN_TERMINAL, stdin_is_terminal

        if stdin_is_terminal():
            raise UsageError(f"-: {STDIN_TERMINAL}")
    files, problems = expand_inputs(inputs)
    if not files and problems:
        for name, why in problems:
            typer.echo(f"whisperctl: error: {name}: {why}", err=True)
        raise typer.Exit(1)
    if ray is not None:
        _on_ray(files, problems, output_dir, config, formats, overwrite, skip_existing, quiet, failures_file,
                ray, workers, gpus_per_worker, cpus_per_worker, strict)
        return

    if server:
        from ..serve.client import RemoteTranscriber, fields_for

        if ray is not None:
            raise UsageError("--server and --ray contradict each other: the server transcribes; pick one.")
        transcriber: Any = RemoteTranscriber(server, fields_for(engine_overrides(engine)), os.environ.get("WHISPERCTL_API_KEY"))
    else:
        from ..engine import Transcriber

        transcriber = Transcriber(config)  # validates and plans: bad flags fail here, before the model loads
    from ..outputs import output_settings, plan_outputs

    # Each input claims its output names exclusively (safe across concurrent runs sharing -o): x, x-2 … and a
    # record in -o/.whisperctl/ says which input owns them and what made each output (see whisperctl/outputs.py
    # and docs/reliability.md).
    skipped = 0
    todo = files
    plan = None
    failures = list(problems)
    finished: set[str] = set()  # inputs done or failed (the rest are unfinished when a run is interrupted)
    try:
        if output_dir is not None:
            plan = plan_outputs(files, output_dir, formats, overwrite=overwrite, skip_existing=skip_existing,
                                settings=output_settings(config))
            todo, skipped = plan.todo, plan.skipped
            failures += plan.problems
        done, audio_seconds, started, warned = _run_local(transcriber, todo, formats, output_dir, quiet, plan,
                                                          failures, finished, strict, overwrite, journal=not server)
    except KeyboardInterrupt as exc:
        _stopped(exc, failures, [name for name in todo if name not in finished], failures_file, output_dir, files)
    _finish(quiet or not (len(files) > 1 or failures or skipped or warned), done, failures, skipped, audio_seconds,
            time.perf_counter() - started, failures_file, warned=0 if strict else warned)


def _run_local(transcriber, todo: list[str], formats, output_dir: Optional[Path], quiet: bool, plan,
               failures: list[tuple[str, str]], finished: set[str], strict: bool = False,
               overwrite: bool = False, journal: bool = True) -> tuple[int, float, float, int]:
    """Transcribe ``todo`` in this process, writing to stdout or the planned outputs; failures are appended to
    ``failures`` and every input done or failed is added to ``finished``; an input whose transcript has warnings
    gets one line on stderr (and is a failure with ``strict``). Returns (done, audio seconds, start, warned)."""
    from ..outputs import write_outputs
    from ..writers import WRITERS

    show_progress = not quiet and sys.stderr.isatty()
    for name, why in failures:
        typer.echo(f"whisperctl: error: {name}: {why}", err=True)
    done = warned = 0
    audio_seconds = 0.0
    started = time.perf_counter()
    with contextlib.ExitStack() as resources:
        progress_ctx = resources.enter_context(_progress(len(todo))) if show_progress and todo else None
        from ..transcript import Checkpoint, SegmentReady, warning_summary
        from ..writers import SegmentStream

        # To stdout, txt/srt/vtt are written segment by segment as they settle (a long file shows text within
        # seconds); files in --output-dir are written whole and atomically once the input is done.
        streamed = output_dir is None and formats[0] in SegmentStream.FORMATS
        stream: SegmentStream | None = None
        # closed on the way out, so an interruption ends the input streams now, not at garbage collection
        journals = _journals(transcriber, plan, todo, overwrite) if plan is not None and journal else {}
        resources.callback(lambda: [j.close() for j in journals.values()])

        def resume(inp):
            journal = journals.get(inp.name)
            found = journal.resume() if journal is not None else None
            if found is not None and not quiet:
                at = found.segments[-1].end if found.segments else 0.0
                typer.echo(f"whisperctl: {inp.name}: resuming after {at:.1f} s ({len(found.segments)} segment(s) kept "
                           "from the interrupted run's journal)", err=True)
            return found

        events = resources.enter_context(contextlib.closing(transcriber.events(
            todo, progress=progress_ctx.advance if progress_ctx else None, resume=resume if journals else None,
            checkpoints=bool(journals))))
        for event in events:
            if isinstance(event, Checkpoint):
                journals[event.source.name].checkpoint(event.point)
                continue
            if isinstance(event, SegmentReady) and event.source.name in journals:
                journals[event.source.name].segment(event.segment)
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
                finished.add(inp.name)
                failures.append((inp.name, str(result)))
                typer.echo(f"whisperctl: error: {result}" if str(result).startswith(inp.name) else f"whisperctl: error: {inp.name}: {result}", err=True)
                continue
            try:
                if streamed:
                    if started_stream is None:
                        sys.stdout.write(SegmentStream(formats[0]).header())
                        sys.stdout.flush()
                elif output_dir is None:
                    sys.stdout.write(WRITERS[formats[0]][1](result))
                    sys.stdout.flush()
                else:
                    write_outputs(plan.claims[inp.name], formats, result)
                    if inp.name in journals:
                        journals.pop(inp.name).remove()
            except OutputError as exc:
                finished.add(inp.name)
                failures.append((inp.name, str(exc)))
                typer.echo(f"whisperctl: error: {exc}", err=True)
                continue
            finished.add(inp.name)
            audio_seconds += result.duration
            if progress_ctx:
                progress_ctx.file_done()
            if _warn(inp.name, warning_summary(result), failures, strict):
                warned += 1
                if strict:
                    continue
            done += 1
    return done, audio_seconds, started, warned


def _journals(transcriber, plan, todo: list[str], overwrite: bool) -> dict:
    """A journal per input written to --output-dir, so an interrupted input goes on where it stopped (sequential
    chunking; not with --hallucination-silence-threshold, which holds segments back, nor for stdin); with
    --overwrite the earlier runs' journals are removed first (see whisperctl/journal.py)."""
    from ..config import Chunking
    from ..journal import Journal
    from ..outputs import output_settings

    opts = transcriber.options
    journals = {name: Journal(plan.claims[name], output_settings(transcriber.config)) for name in todo
                if name in plan.claims}
    if overwrite:
        for journal in journals.values():
            journal.remove()
    if opts.chunking != Chunking.SEQUENTIAL or opts.hallucination_silence_threshold is not None:
        return {}
    return {name: j for name, j in journals.items() if j.usable}


def _warn(name: str, summary: Optional[str], failures: list[tuple[str, str]], strict: bool) -> bool:
    """One stderr line for an input whose transcript has warnings (a failure with --strict); whether it has."""
    if summary is None:
        return False
    typer.echo(f"whisperctl: warning: {name}: {summary}", err=True)
    if strict:
        failures.append((name, f"warning: {summary}"))
    return True


def _stopped(exc: KeyboardInterrupt, failures: list[tuple[str, str]], unfinished: list[str],
             failures_file: Optional[Path], output_dir: Optional[Path], files: list[str]) -> None:
    """Ctrl-C or SIGTERM: write --failures (what failed, then every input left unfinished) and raise the
    interruption with the command that finishes the job."""
    from . import Interrupted, Terminated

    terminated = isinstance(exc, Terminated)
    if failures_file is not None:
        from ..writers import write_atomic

        why = f"not finished: the run was {'terminated' if terminated else 'interrupted'}"
        try:
            write_atomic(failures_file, failures_tsv(failures + [(name, why) for name in unfinished]))
        except OutputError as error:  # the interruption is what to report; this only adds to it
            typer.echo(f"whisperctl: error: {error}", err=True)
    raise Interrupted(terminated, _next_step(output_dir, files)) from exc


def _next_step(output_dir: Optional[Path], files: list[str]) -> str:
    """What finishes an interrupted run: the same command with --skip-existing (instead of --overwrite), which
    redoes exactly the inputs whose outputs are not current for these options (see whisperctl/outputs.py)."""
    if output_dir is None:
        return ("standard output holds the transcripts finished before it; run the command again, or write "
                "files with --output-dir DIR, which a rerun can resume")
    if "-" in files:
        return "finished outputs are complete; standard input cannot be resumed: run the command again with its input"
    import shlex

    args = sys.argv[1:]
    end = args.index("--") if "--" in args else len(args)  # after --, a name is an input, not an option
    options = [a for a in args[:end] if a != "--overwrite"]
    if "--skip-existing" not in options:
        options.append("--skip-existing")
    return f"finished outputs are complete; to finish the job, run: {shlex.join(['whisperctl', *options, *args[end:]])}"


def _finish(quiet: bool, done: int, failures: list[tuple[str, str]], skipped: int, audio_seconds: float, wall: float,
            failures_file: Optional[Path], where: str = "", warned: int = 0) -> None:
    """The summary line, the --failures file and the exit code: the same for a local and a Ray run. ``warned``:
    how many of the ``done`` inputs have warnings."""
    if not quiet:
        rtfx = f", RTFx {audio_seconds / wall:.1f}" if wall > 0 and audio_seconds else ""
        with_warnings = f" ({warned} with warnings)" if warned and done else ""
        typer.echo(
            f"whisperctl: {done} transcribed{with_warnings}, {len(failures)} failed, {skipped} skipped; "
            f"{audio_seconds:.1f} s of audio in {wall:.1f} s{rtfx}{where}",
            err=True,
        )
    if failures_file is not None:
        from ..writers import write_atomic

        write_atomic(failures_file, failures_tsv(failures))
    if failures:
        raise typer.Exit(1)


def _on_ray(files, problems, output_dir, config, formats, overwrite, skip_existing, quiet, failures_file,
            address, workers, gpus_per_worker, cpus_per_worker, strict: bool = False) -> None:
    """``transcribe --ray``: the corpus on a Ray cluster (whisperctl/cluster.py), reported as a local run is."""
    from ..cluster import transcribe_corpus

    for name, why in problems:
        typer.echo(f"whisperctl: error: {name}: {why}", err=True)
    started = time.perf_counter()
    progress_ctx = _progress(len(files)) if not quiet and sys.stderr.isatty() else None
    failed: list[tuple[str, str]] = []
    warned: list[str] = []
    todo: dict = {}  # the inputs sent to the cluster (not skipped or refused), with their claims
    finished: set[str] = set()

    def on_file(outcome) -> None:
        finished.add(outcome.input)
        if outcome.error is not None:
            failed.append((outcome.input, outcome.error))
            typer.echo(f"whisperctl: error: {outcome.input}: {outcome.error}", err=True)
            return
        if progress_ctx is not None:
            progress_ctx.advance(outcome.input, outcome.audio_s)
            progress_ctx.file_done()
        if _warn(outcome.input, outcome.warning, failed, strict):
            warned.append(outcome.input)

    with contextlib.ExitStack() as resources:
        if progress_ctx:
            resources.enter_context(progress_ctx)
        try:
            report = transcribe_corpus(files, output_dir, config, formats, overwrite=overwrite,
                                       skip_existing=skip_existing, address=address, workers=workers,
                                       cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, on_file=on_file,
                                       on_start=todo.update)
        except KeyboardInterrupt as exc:
            # outcomes come per task of several files: an input whose outputs a worker wrote is finished too
            unfinished = [name for name, claim in todo.items() if name not in finished and not claim.done_now()]
            _stopped(exc, list(problems) + failed, unfinished, failures_file, output_dir, files)
    for name, why in report.problems:
        typer.echo(f"whisperctl: error: {name}: {why}", err=True)
    failures = list(problems) + report.failures + ([(n, why) for n, why in failed if why.startswith("warning: ")]
                                                   if strict else [])
    where = f" on Ray, {report.workers} worker(s)" if report.workers else ""
    done = len(report.done) - (len(warned) if strict else 0)
    _finish(quiet, done, failures, report.skipped, sum(o.audio_s for o in report.done),
            time.perf_counter() - started, failures_file, where, warned=0 if strict else len(warned))


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
