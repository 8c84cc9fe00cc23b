"""Presets: a TOML file of options (``--config FILE``; see configs/), checked key by key.

Engine keys are the option fields' names (:mod:`whisperctl.config`, each declared once); ``[bench]`` keys are
bench's axes. A misspelled key, a key given twice or a file that is not UTF-8 TOML is a usage error naming the
file.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from .config import EngineConfig
from .errors import UsageError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


BENCH_KEYS = frozenset({"compare", "batch_sizes", "dtypes", "quantize", "models", "warmup", "repeats", "duration",
                        "weights", "decode_tokens", "baseline", "audio", "manifest", "engines"})


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and check a TOML preset: ``{"engine": {...}, "bench": {...}}``.

    Engine keys sit under ``[engine]`` or at the top level. A misspelled table or key, a table that is not a
    table, a key given twice (``beam_size`` and ``beam-size``, or at the top level and in ``[engine]``) or a file
    that is not UTF-8 TOML is a :class:`UsageError` naming the file; nothing is ignored silently. Keys come back
    spelled with underscores.
    """
    p = Path(path)
    where = f"--config {p}"
    try:
        with p.open("rb") as fh:
            raw = fh.read(_MAX_CONFIG_BYTES + 1)
        if len(raw) > _MAX_CONFIG_BYTES:
            raise UsageError(f"{where}: larger than {_MAX_CONFIG_BYTES // 1024} KiB; a preset is a few lines of TOML.")
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file. Presets ship in configs/.") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: is a directory; give a .toml file.") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8.") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{where}: cannot read it as TOML: {getattr(exc, 'strerror', None) or exc}") from None
    valid = {"engine": EngineConfig.field_names(), "bench": BENCH_KEYS}
    out: dict[str, dict[str, Any]] = {"engine": {}, "bench": {}}
    written: dict[tuple[str, str], tuple[str, str]] = {}  # (table, key with underscores) → (key as written, where)

    def put(table: str, key: str, value: Any, place: str) -> None:
        name = str(key).replace("-", "_")
        if isinstance(value, dict):
            raise UsageError(f"{where}: [{table}] {key} must be a value, not a table.")
        if name not in valid[table]:
            raise UsageError(f"{where}: unknown key '{key}' in [{table}].{_did_you_mean(key, valid[table])} "
                             f"Valid: {', '.join(sorted(valid[table]))}.")
        if (table, name) in written:  # TOML itself refuses only the same spelling twice in one table
            first, first_place = written[(table, name)]
            both = (f"'{first}' and '{key}' {place} are one key spelled two ways" if first_place == place
                    else f"'{first}' {first_place} and '{key}' {place} are the same key")
            raise UsageError(f"{where}: {both}; keep one.")
        written[(table, name)] = (str(key), place)
        out[table][name] = value

    for key, value in data.items():
        if key in out:
            if not isinstance(value, dict):
                raise UsageError(f"{where}: '{key}' must be a table ([{key}]), got {type(value).__name__} {value!r}.")
            for inner, inner_value in value.items():
                put(key, inner, inner_value, f"in [{key}]")
        elif isinstance(value, dict):
            raise UsageError(f"{where}: unknown table [{key}]. Valid: [engine], [bench].{_did_you_mean(key, out)}")
        else:
            put("engine", key, value, "at the top level")  # top-level engine keys (flat presets)
    return out


_MAX_CONFIG_BYTES = 1 << 20


def _did_you_mean(key: str, valid: Any) -> str:
    close = difflib.get_close_matches(str(key).replace("-", "_"), list(valid), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
