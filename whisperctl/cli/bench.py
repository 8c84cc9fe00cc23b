"""``whisperctl bench``: the attention / dtype / quantization / batch-size matrix."""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import flag as flag_of, option_help
from ..presets import load_config_file
from ..errors import UsageError
from . import app
from .options import check_output_file, engine_options, engine_overrides, set_verbosity, verbose_option

AXES = frozenset({"model", "attention", "dtype", "quantization", "batch_size", "decoder"})


@app.command()
@engine_options(exclude=AXES)
def bench(
    compare: Optional[str] = typer.Option(None, "--compare", "--attn", help="Attention implementations, comma-separated (aliases and sdpa:<backend> accepted). Default: sdpa."),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", "--batch-size", help="Comma-separated batch sizes. Default: 8."),
    dtypes: Optional[str] = typer.Option(None, "--dtypes", "--dtype", help="Comma-separated dtypes (auto, fp32, fp16, bf16). Default: auto."),
    decoders: Optional[str] = typer.Option(None, "--decoders", "--decoder", help="Decoding loops, comma-separated: auto, lean, generate (lean,generate compares whisperctl's loop with transformers' generate()). Default: auto."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Comma-separated: none, int8, int4. Default: none."),
    models: Optional[str] = typer.Option(None, "--models", "--model", help="Comma-separated models. Default: tiny.en (bundled)."),
    audio: list[str] = typer.Option([], "--audio", help="Audio files or directories (repeatable). Default: the bundled example clip."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="TSV with file and reference_text columns: adds WER."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Tile the input audio to this many seconds."),
    weights_: Optional[str] = typer.Option(None, flag_of("weights"), help=option_help("weights")),
    decode_tokens: Optional[int] = typer.Option(None, flag_of("decode_tokens"), help=option_help("decode_tokens")),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Uncounted warm-up batches per configuration. Default: 2."),
    repeats: Optional[int] = typer.Option(None, "--repeats", help="Timed passes over the inputs. Default: 5."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Attention to compute speedups against. Default: the first --compare entry."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every raw sample and the environment here."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write the table as CSV."),
    md_out: Optional[Path] = typer.Option(None, "--markdown", help="Write the table as Markdown (for docs)."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="PNG of RTFx and memory per configuration (needs matplotlib)."),
    compare_to: Optional[Path] = typer.Option(None, "--compare-to", help="A previous --json: add the RTFx ratio to it."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML preset with [engine] and [bench] tables (configs/)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display or notes on stderr; errors only."),
    verbose: bool = verbose_option(),
    engines: Optional[str] = typer.Option(None, "--engines", help="Compare engines on the same inputs, each in its own process: "
                                          "whisperctl, transformers, faster-whisper, faster-whisper:batched, openai-whisper, "
                                          "whisper.cpp, or all (docs/bench.md). Default: whisperctl's matrix."),
    **engine: Any,
) -> None:
    """Measure latency, RTFx, tokens/s and memory for each configuration; skip what cannot run here."""
    set_verbosity(verbose, quiet)
    from ..bench import report, runner

    request = runner.BenchRequest.from_sources(
        {"compare": compare, "batch_sizes": batch_sizes, "dtypes": dtypes, "decoders": decoders, "quantize": quantize,
         "models": models, "audio": audio, "manifest": manifest, "duration": duration, "weights": weights_,
         "decode_tokens": decode_tokens, "warmup": warmup, "repeats": repeats, "baseline": baseline, "engines": engines},
        engine_overrides(engine), load_config_file(config_file) if config_file is not None else None)
    spec = request.spec
    engine_bench = None
    if request.engines is not None:  # names, packages and the one configuration checked now
        from .bench_engines import engines_plan

        if len(spec.decoders) > 1:
            raise UsageError("--decoders: --engines compares the engines at one configuration; give one decoder, or "
                             "compare decoders without --engines.")
        engine_bench = engines_plan(request.engines, {**request.engine_settings, "decoder": spec.decoders[0].value},
                                    request.axes, request.bench_only, spec.warmup, spec.repeats)
    _check_models(spec.models, random_weights=spec.base.weights == "random")  # now, not after other rows ran
    # Everything that could fail after the run is checked before it: the samples of a long benchmark must not
    # be lost to an unwritable --json or an unreadable --compare-to.
    outs = _Outputs(json_out, csv_out, md_out, plot_out)
    outs.check()
    previous = report.load_previous(compare_to) if compare_to is not None else None
    inputs = _inputs(request.audio, request.manifest, request.duration)
    _run_and_report(spec, engine_bench, inputs, outs, previous, quiet)


def _run_and_report(spec, engine_bench, inputs, outs: "_Outputs", previous, quiet: bool) -> None:
    """Run the matrix (or the engines), print the table, write the outputs; an interruption keeps the rows that
    finished (marked partial) and exits 130/143; exit 1 when no row ran."""
    from ..bench import report, runner

    from ..eligibility import probe

    env = probe()
    stopped: Optional[runner.BenchInterrupted] = None
    with contextlib.ExitStack() as resources:
        on_progress = None
        if sys.stderr.isatty() and not quiet:
            from rich.console import Console

            on_progress = resources.enter_context(Console(stderr=True).status("benchmarking…")).update
        try:
            if engine_bench is not None:
                from ..bench import compare

                result = compare.run(engine_bench, inputs, env, on_progress=on_progress)
            else:
                result = runner.run(spec, inputs, env, on_progress=on_progress)
        except runner.BenchInterrupted as exc:  # Ctrl-C or SIGTERM: the rows that finished are still reported
            result, stopped = exc.result, exc
    result["command"] = "whisperctl " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if previous is not None:
        report.add_previous(result, previous)
    report.print_table(result)
    outs.write(result)
    if stopped is not None:
        from . import Interrupted, Terminated

        raise Interrupted(isinstance(stopped.__cause__, Terminated), outs.kept(result)) from stopped
    if all(not r["status"].startswith(("ok", "skipped")) for r in result["rows"]):
        raise typer.Exit(1)


def _check_models(names: list[str], random_weights: bool) -> None:
    from .. import models as model_registry

    for name in names:
        if random_weights:
            if model_registry.architecture(name) is None:
                raise UsageError(f"--weights random: no architecture on record for '{name}'. Use one of: "
                                 f"{', '.join(model_registry.ARCHITECTURES)}.")
        else:
            model_registry.resolve(name)


@dataclasses.dataclass(frozen=True)
class _Outputs:
    """bench's report files: checked before the run, written after it."""

    json: Optional[Path]
    csv: Optional[Path]
    markdown: Optional[Path]
    plot: Optional[Path]

    def check(self) -> None:
        from ..bench import report

        if self.plot is not None:
            report.check_plot_available()
        outputs = [(path, flag) for path, flag in ((self.json, "--json"), (self.csv, "--csv"),
                                                   (self.markdown, "--markdown"), (self.plot, "--plot")) if path is not None]
        _check_distinct_outputs(outputs)
        for path, flag in outputs:
            check_output_file(path, flag)

    def kept(self, result: dict[str, Any]) -> str:
        """Where an interrupted run's finished rows went (the next step the interruption message names)."""
        from ..bench.report import INTERRUPTED

        done = sum(r.get("status") != INTERRUPTED for r in result["rows"])
        files = [str(p) for p in (self.json, self.csv, self.markdown, self.plot) if p is not None]
        where = f"written to {', '.join(files)}, marked partial" if files else "in the table above"
        return f"the {done} of {len(result['rows'])} row(s) that finished are {where}"

    def write(self, result: dict[str, Any]) -> None:
        from ..bench import report

        if self.json:
            report.write_json(result, self.json)
        if self.csv:
            report.write_csv(result, self.csv)
        if self.markdown:
            from ..writers import write_atomic

            write_atomic(self.markdown, report.to_markdown(result, result["command"]))
        if self.plot:
            report.write_plot(result, self.plot)


def _inputs(audio_list: Any, manifest: Optional[str], duration: Optional[float]) -> list:
    """The bench inputs: files or directories (flags or the preset's list), tiled to ``duration`` when given."""
    from ..bench import runner

    tiled = runner.check_duration(duration) if duration is not None else None
    if isinstance(audio_list, str):
        audio_list = [audio_list]
    if not isinstance(audio_list, list) or not all(isinstance(a, str) for a in audio_list):
        raise UsageError("--config [bench] audio: give a list of file or directory names.")
    return runner.load_inputs(audio_list, manifest, tiled)


def _check_distinct_outputs(outputs: list[tuple[Path, str]]) -> None:
    """Two outputs on one file (``--json r.json --csv ./r.json``) would leave only the last one written."""
    import os

    claimed: dict[str, str] = {}
    for path, flag in outputs:
        key = os.path.realpath(path)
        if key in claimed:
            raise UsageError(f"{claimed[key]} and {flag} both write {path}; give each output its own file.")
        claimed[key] = flag
