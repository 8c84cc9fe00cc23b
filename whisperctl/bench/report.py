"""Bench output: the terminal table, JSON (raw samples), CSV, Markdown, a PNG plot, and --compare-to."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..writers import write_atomic

#: (column title, row key, formatter). One list serves the terminal table, CSV and Markdown.
COLUMNS: list[tuple[str, str]] = [
    ("model", "model"), ("attn", "attention"), ("decoder", "decoder"), ("dtype", "dtype"), ("quant", "quantization"), ("batch", "batch_size"),
    ("lat med s", "latency_median_s"), ("lat p90 s", "latency_p90_s"), ("RTFx", "rtfx_median"), ("tok/s", "tokens_per_s"),
    ("enc %", "encoder_share"), ("mem MiB", "memory"), ("WER %", "wer"), ("speedup", "speedup"), ("same text", "same_text"),
    ("vs 1st decoder", "decoder_speedup"), ("vs prev", "vs_previous"), ("status", "status"),
]

#: ``bench --engines`` rows (whisperctl.bench.compare): one per engine, what it ran, load apart from the run.
ENGINE_COLUMNS: list[tuple[str, str]] = [
    ("engine", "engine"), ("runs", "ran_summary"), ("import s", "imports_s"), ("load s", "load_s"), ("wall s", "wall_s"),
    ("RTFx", "rtfx_median"), ("RTFx w/ load", "rtfx_with_load_median"), ("RSS MiB", "rss"), ("VRAM MiB", "vram"),
    ("WER %", "wer"), ("worst file", "worst_file_summary"), ("speedup", "speedup"), ("vs prev", "vs_previous"),
    ("status", "status"),
]


#: The status of a row an interruption left unfinished (the result then says ``"partial": true``).
INTERRUPTED = "interrupted"


def is_engines(result: dict[str, Any]) -> bool:
    return result.get("kind") == "engines"


def _memory(row: dict[str, Any]) -> float | None:
    value = row.get("peak_vram_allocated_bytes", row.get("peak_rss_bytes"))
    return value / 2**20 if value is not None else None


def cell(row: dict[str, Any], key: str) -> str:
    value = _memory(row) if key == "memory" else row.get(key)
    if key in ("rss", "vram"):
        value = row.get(f"peak_{key}_bytes")
        value = value / 2**20 if value is not None else None
    if value is None:
        return ""
    if key in ("encoder_share",):
        return f"{100 * value:.0f}"
    if key == "wer":
        return f"{100 * value:.2f}"
    if key in ("latency_median_s", "latency_p90_s"):
        return f"{value:.3f}"
    if key in ("imports_s", "load_s", "wall_s"):
        return f"{value:.2f}"
    if key in ("rtfx_median", "tokens_per_s", "memory", "rtfx_with_load_median", "rss", "vram"):
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"
    if key in ("speedup", "vs_previous"):
        return f"{value:.2f}x"
    return str(value)


def header(result: dict[str, Any]) -> str:
    env = result["environment"]
    gpu = env.get("cuda_device_name")
    gpus = env.get("gpus") or []
    cc = f" (sm {gpus[0]['capability'][0]}.{gpus[0]['capability'][1]})" if gpus else ""
    device = f"GPU {gpu}{cc}, CUDA {env.get('torch_cuda')}" if gpu else f"CPU {env.get('cpu_model')}"
    spec = result["spec"]
    weights = spec["base"].get("weights", "pretrained")
    audio = sum(i["duration_s"] for i in result["inputs"])
    lines = [
        f"{device}; torch {env.get('torch')}, transformers {env.get('transformers')}; threads {env.get('torch_threads')}",
        f"{len(result['inputs'])} input(s), {audio:.1f} s of audio; warm-up {spec['warmup']}, repeats {spec['repeats']}; "
        f"baseline {spec['baseline']}; weights {weights}"
        + (" (text and WER blank: random weights)" if weights == "random" else ""),
    ]
    if result.get("partial"):
        unfinished = sum(r.get("status") == INTERRUPTED for r in result["rows"])
        lines.append(f"PARTIAL: interrupted; {unfinished} of {len(result['rows'])} row(s) did not finish")
    return "\n".join(lines)


def load_previous(previous_path: str | Path) -> dict[str, Any]:
    """A saved ``--json`` result, checked before the benchmark runs (a bad file must not cost the run)."""
    where = f"--compare-to {previous_path}"
    try:
        previous = json.loads(Path(previous_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file.") from None
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not UTF-8 text, so not a bench JSON.") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where}: cannot read a bench JSON: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(previous, dict) or str(previous.get("schema", "")).split("/")[0] != "whisperctl.bench":
        raise UsageError(f"{where}: not a whisperctl bench JSON (written by bench --json).")
    rows = previous.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UsageError(f"{where}: its 'rows' are not a list of result rows.")
    return previous


def add_previous(result: dict[str, Any], previous: dict[str, Any]) -> None:
    """Add ``vs_previous``: this run's RTFx over the saved run's (:func:`load_previous`), for rows in both."""
    key = lambda r: (r.get("engine"), r.get("model"), r.get("attention"), r.get("decoder_option"), r.get("dtype"),  # noqa: E731
                     r.get("quantization"), r.get("batch_size"))
    old = {key(r): r for r in previous.get("rows", []) if r.get("status") == "ok"}
    for row in result["rows"]:
        prev = old.get(key(row))
        if prev and row.get("status") == "ok" and isinstance(prev.get("rtfx_median"), (int, float)) and prev["rtfx_median"] > 0:
            row["vs_previous"] = row["rtfx_median"] / prev["rtfx_median"]


def visible_columns(result: dict[str, Any]) -> list[tuple[str, str]]:
    rows = result["rows"]
    columns = ENGINE_COLUMNS if is_engines(result) else COLUMNS
    # the decoding loop is a column where rows differ in it (--decoders, or auto choosing by device)
    shown = lambda key: len({r.get("decoder") for r in rows}) > 1 if key == "decoder" else any(cell(r, key) for r in rows)  # noqa: E731
    return [(title, key) for title, key in columns if key in ("model", "attention", "engine", "status") or shown(key)]


#: Columns that identify a row: when every row that ran shares a value, a narrow terminal shows it once, below.
FOLDABLE = ("model", "dtype", "quantization", "batch_size")
#: Measurements in the order they leave a table too wide for the terminal (the exports keep every column).
DROP_ORDER = ("latency_p90_s", "encoder_share", "tokens_per_s", "vs_previous", "memory", "latency_median_s")
_LEFT = ("model", "attention", "status", "same_text", "dtype", "quantization")


def fit_table(result: dict[str, Any], width: int | None) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """What the terminal table shows at ``width`` (None: everything): its columns, each row's status, and notes
    for below it. While the table is too wide, in order: values every row that ran shares become one note; long
    statuses (skip reasons, errors) become numbered notes; measurements go by :data:`DROP_ORDER`."""
    rows = result["rows"]
    cols = visible_columns(result)
    statuses = [str(r.get("status", "")) for r in rows]
    if width is None:
        return cols, statuses, []

    def needed() -> int:  # rich's default box: a border per column plus one, a space either side of each cell
        widths = [max([len(title)] + [len(s) if key == "status" else len(cell(r, key)) for r, s in zip(rows, statuses)])
                  for title, key in cols]
        return sum(widths) + 3 * len(cols) + 1

    notes = []
    if needed() > width:
        ran = [r for r in rows if r.get("status") == "ok"] or rows
        shared = [(title, key) for title, key in cols if key in FOLDABLE and len({cell(r, key) for r in ran}) == 1]
        if shared:
            cols = [c for c in cols if c not in shared]
            notes.append("every row: " + ", ".join(f"{title} {cell(ran[0], key)}" for title, key in shared))
    if needed() > width:
        numbered: dict[str, int] = {}
        for i, status in enumerate(statuses):
            kind, sep, reason = status.partition(": ")
            if sep:
                if reason not in numbered:
                    numbered[reason] = len(numbered) + 1
                    notes.append(f"[{numbered[reason]}] {reason}")
                statuses[i] = f"{kind} [{numbered[reason]}]"
    dropped = []
    for key in DROP_ORDER:
        if needed() <= width:
            break
        for column in [c for c in cols if c[1] == key]:
            cols.remove(column)
            dropped.append(column[0])
    if dropped:
        notes.append(f"not shown at {width} columns: {', '.join(dropped)} (--json, --csv and --markdown keep them)")
    return cols, statuses, notes


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    # A terminal, or a COLUMNS the user set, is the width to fit; a file or pipe otherwise gets every column,
    # one line per row.
    width = console.width if console.is_terminal or os.environ.get("COLUMNS", "").isdigit() else None
    cols, statuses, notes = fit_table(result, width)
    table = Table(title="whisperctl bench", caption=escape("\n".join([header(result), *notes])), caption_justify="left")
    for title, key in cols:
        table.add_column(title, justify="left" if key in _LEFT else "right", overflow="fold", no_wrap=key not in _LEFT)
    for row, status in zip(result["rows"], statuses):
        cells = []
        for _, key in cols:
            text = escape(status if key == "status" else cell(row, key))
            if key == "status" and status != "ok":
                text = f"[yellow]{text}[/]"
            if key == "same_text" and text not in ("", "baseline", "same", "same words"):
                text = f"[red]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    if width is None:
        console = Console(width=10_000)  # files and pipes: one line per row rather than folded columns
        console.print(table, width=console.measure(table).maximum)
    else:
        console.print(table)


def write_json(result: dict[str, Any], path: str | Path) -> None:
    write_atomic(Path(path), json.dumps(result, indent=2, default=str) + "\n")


def write_csv(result: dict[str, Any], path: str | Path) -> None:
    buf = io.StringIO()
    if is_engines(result):
        keys = ["engine", "model", "device", "threads", "version", "ran_summary", "imports_s", "load_s", "wall_s", "rtfx_median",
                "rtfx_with_load_median", "peak_rss_bytes", "peak_vram_bytes", "wer", "worst_file", "speedup", "vs_previous", "status"]
    else:
        keys = [k for _, k in COLUMNS if k != "memory"] + ["peak_vram_allocated_bytes", "peak_vram_reserved_bytes", "peak_rss_bytes", "load_s", "attention_in_effect", "weights"]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in result["rows"]:
        writer.writerow({k: row.get(k, "") for k in keys})
    write_atomic(Path(path), buf.getvalue())


def to_markdown(result: dict[str, Any], command: str | None = None) -> str:
    cols = visible_columns(result)
    lines = []
    if command:
        lines += ["```", command, "```", ""]
    lines += [line + "  " for line in header(result).splitlines()] + [""]
    lines.append("| " + " | ".join(t for t, _ in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in result["rows"]:
        lines.append("| " + " | ".join(cell(row, k).replace("|", "/") for _, k in cols) + " |")
    return "\n".join(lines) + "\n"


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'whisperctl[plot]'.") from None


def write_plot(result: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if is_engines(result):
        return _plot_engines(result, path, plt)
    rows = [r for r in result["rows"] if r.get("status") == "ok"]
    labels = [f"{r['model']}\n{r['attention']} {r['dtype']} {r['quantization']} b{r['batch_size']}" for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 1.2 * len(rows)), 7), sharex=True)
    ax1.bar(range(len(rows)), [r["rtfx_median"] for r in rows], color="tab:blue")
    ax1.set_ylabel("RTFx (median)")
    ax2.bar(range(len(rows)), [_memory(r) or 0 for r in rows], color="tab:orange")
    ax2.set_ylabel("peak VRAM / RSS (MiB)")
    ax2.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=7)
    fig.suptitle(header(result).splitlines()[0], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_engines(result: dict[str, Any], path: str | Path, plt: Any) -> None:
    """RTFx (load excluded and included) and WER per engine."""
    rows = [r for r in result["rows"] if r.get("rtfx_median")]
    x = list(range(len(rows)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 1.6 * len(rows)), 7), sharex=True)
    ax1.bar([i - 0.2 for i in x], [r["rtfx_median"] for r in rows], width=0.4, color="tab:blue", label="RTFx")
    ax1.bar([i + 0.2 for i in x], [r["rtfx_with_load_median"] for r in rows], width=0.4, color="tab:cyan", label="RTFx with load")
    ax1.set_ylabel("RTFx (median)")
    ax1.legend(fontsize=7)
    ax2.bar(x, [100 * r.get("wer", 0.0) for r in rows], color="tab:red")
    ax2.set_ylabel("WER % (blank: no references)")
    ax2.set_xticks(x, [f"{r['engine']}\n{r.get('ran_summary', '')[:40]}" for r in rows], rotation=30, ha="right", fontsize=7)
    fig.suptitle(header(result).splitlines()[0], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
