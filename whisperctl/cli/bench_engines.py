"""``bench --engines``: the option checks that turn bench's flags into one engine comparison (the library's
:func:`whisperctl.bench.compare.plan`), all before anything runs."""

from __future__ import annotations

from typing import Any

from ..errors import UsageError

#: bench's matrix axes: with --engines each takes one value, the configuration every engine is asked for
_AXES = {"model": "--models", "attention": "--compare", "dtype": "--dtypes", "quantization": "--quantize",
         "batch_size": "--batch-sizes"}


def engines_plan(engines: Any, engine_config: dict[str, Any], axes: dict[str, Any], matrix_only: dict[str, Any],
                 warmup: int, repeats: int):
    """``engine_config``: the engine fields given (preset and flags); ``axes``: the matrix flags given, by config
    field; ``matrix_only``: flags that have no meaning in an engine comparison, by flag, when given."""
    from ..bench import compare
    from ..eligibility import probe

    if isinstance(engines, (list, tuple)):  # a TOML list: [bench] engines = ["whisperctl", "faster-whisper"]
        engines = ",".join(map(str, engines))
    if not isinstance(engines, str):
        raise UsageError(f"--config [bench] engines: give engine names, got {engines!r}.")
    for flag, value in matrix_only.items():
        if value is not None:
            raise UsageError(f"{flag}: not with --engines (it applies to whisperctl's matrix only); drop one of them.")
    config = dict(engine_config)
    for field, value in axes.items():
        if value is None:
            continue
        items = [v.strip() for v in (value.split(",") if isinstance(value, str) else map(str, value))] \
            if not isinstance(value, int) else [str(value)]
        items = [v for v in items if v]
        if len(items) != 1:
            raise UsageError(f"{_AXES[field]}: --engines compares the engines at one configuration; give one value, "
                             f"got {', '.join(items) or 'none'}.")
        config[field] = int(items[0]) if field == "batch_size" and items[0].isdigit() else items[0]
    return compare.plan(engines, config, probe(), warmup=warmup, repeats=repeats)
