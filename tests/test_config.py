import pytest

from whisperctl.config import Attention, DType, EngineConfig, Quantization, Timestamps, Weights, parse_choice
from whisperctl.presets import load_config_file
from whisperctl.errors import UsageError


@pytest.mark.parametrize("spelling", ["fa2", "flash_attn_2", "flash-attention-2", "flash_attention2", "FA2", "Flash_Attention_2"])
def test_fa2_aliases_resolve(spelling):
    assert parse_choice(Attention, spelling, "--attn") is Attention.FLASH_ATTENTION_2


def test_unknown_attention_lists_valid_names_and_suggests():
    with pytest.raises(UsageError) as err:
        parse_choice(Attention, "sdpa:efficent", "--attn")
    msg = str(err.value)
    assert "Valid: auto, eager, sdpa, sdpa:flash, sdpa:efficient, sdpa:math, sdpa:cudnn, flash_attention_2" in msg
    assert "Did you mean 'sdpa:efficient'?" in msg


def test_alias_suggestion_points_to_canonical_name():
    with pytest.raises(UsageError, match="Did you mean 'flash_attention_2'"):
        parse_choice(Attention, "flash_atn_2", "--attn")


def test_sdpa_backend_and_hf_name():
    assert Attention.SDPA_MATH.hf_name == "sdpa" and Attention.SDPA_MATH.sdpa_backend == "math"
    assert Attention.SDPA.sdpa_backend is None
    assert Attention.FLASH_ATTENTION_2.hf_name == "flash_attention_2"


def test_defaults_are_validated_enums():
    cfg = EngineConfig()
    assert cfg.attention is Attention.AUTO and cfg.dtype is DType.AUTO and cfg.quantization is Quantization.AUTO
    assert cfg.overlap_s == pytest.approx(5.0)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 3


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"batch_size": 0}, "--batch-size: must be an integer ≥ 1"),
        ({"batch_size": -4}, "--batch-size"),
        ({"chunk_length_s": 0}, "--chunk-length: 0 s is outside [1, 30]"),
        ({"chunk_length_s": 31}, "outside [1, 30]"),
        ({"chunk_overlap_s": 20}, "--chunk-overlap"),
        ({"dtype": "fp8"}, "--dtype: unknown value 'fp8'"),
        ({"device": "tpu"}, "--device: unknown device 'tpu'"),
        ({"temperature": "0,2"}, "--temperature"),
        ({"temperature": "hot"}, "is not a number"),
        ({"language": "12"}, "--language"),
        ({"beam_size": 0}, "--beam-size"),
        ({"model": " "}, "--model: empty"),
    ],
)
def test_bad_values_are_usage_errors(changes, fragment):
    with pytest.raises(UsageError) as err:
        EngineConfig(**changes)
    assert fragment in str(err.value)
    assert err.value.exit_code == 2


def test_temperature_list_and_dict_roundtrip():
    cfg = EngineConfig(temperature="0, 0.2,0.4", timestamps="words", dtype="float16")
    assert cfg.temperature == (0.0, 0.2, 0.4)
    assert cfg.timestamps is Timestamps.WORD and cfg.dtype is DType.FP16
    d = cfg.to_dict()
    assert d["temperature"] == [0.0, 0.2, 0.4] and d["dtype"] == "fp16"
    assert EngineConfig.from_mapping(d) == cfg


def test_from_mapping_rejects_unknown_keys():
    with pytest.raises(UsageError, match="unknown config key"):
        EngineConfig.from_mapping({"atention": "sdpa"})


def test_shipped_presets_parse(tmp_path):
    from pathlib import Path

    presets = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))
    assert presets, "configs/ ships presets"
    for p in presets:
        data = load_config_file(p)
        EngineConfig.from_mapping(data.get("engine", {}))
        assert set(data) <= {"engine", "bench"}


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_config_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("engine = [")
    with pytest.raises(UsageError, match="cannot read"):
        load_config_file(bad)


def test_every_config_field_is_load_time_per_call_or_run_control():
    import dataclasses

    from whisperctl.config import DecodeOptions, LoadOptions, RunControl

    load = {f.name for f in dataclasses.fields(LoadOptions)}
    per_call = {f.name for f in dataclasses.fields(DecodeOptions)}
    control = {f.name for f in dataclasses.fields(RunControl)}
    assert control == {"decode_tokens", "halve_on_oom"} and not (load | control) & per_call and not load & control
    assert EngineConfig.field_names() == load | per_call | control
    config = EngineConfig(attention="sdpa", beam_size=5, weights="Random", decode_tokens=4)
    assert (config.load.attention, config.decode.beam_size, config.weights) == (Attention.SDPA, 5, Weights.RANDOM)
    assert (config.control, config.decode_tokens) == (RunControl(decode_tokens=4), 4)
    assert config.replace(beam_size=2).load is config.load and EngineConfig(load=config.load) == EngineConfig(
        attention="sdpa", weights="random")
    assert config.replace(halve_on_oom=False).decode is config.decode
    assert set(config.to_dict()) == EngineConfig.field_names()
    assert EngineConfig().decode_options() == DecodeOptions()  # the same defaults
    assert EngineConfig().run_control() == RunControl() and RunControl().halve_on_oom
    assert config.run_control(halve_on_oom=False) == RunControl(decode_tokens=4, halve_on_oom=False)
    with pytest.raises(TypeError, match="decode_tokens"):
        config.decode_options(decode_tokens=3)  # not a decoding option: it says how the run is driven
    opts = EngineConfig(batch_size=3, temperature="0,0.5").decode_options(beam_size=2)
    assert (opts.batch_size, opts.temperature, opts.beam_size) == (3, (0.0, 0.5), 2)


def test_each_option_is_declared_once_with_its_flag_help_and_readme_row():
    """The option dataclasses' fields are the one declaration of every option (issue 34): each has a flag (or is
    library-only, said so), a help text, a command-line type, and a row in the README's options table; the CLI's
    options are built from them; every flag a validation message names is a declared one."""
    import re
    from pathlib import Path

    import dataclasses

    from whisperctl.cli.options import ENGINE_OPTIONS
    from whisperctl.config import DecodeOptions, LoadOptions, RunControl, option_fields
    from whisperctl.errors import UsageError

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `--"))
    declared = set()
    for f in option_fields():
        meta = f.metadata
        assert meta["help"].strip() and meta["cli_type"] in (str, int, float, bool), f.name
        if meta["limits"] is not None:  # the bounds its check enforces: the default within them, and enforced
            low, high = meta["limits"]
            default = f.default
            assert default is None or low <= default <= high, f.name
            owner = next(cls for cls in (LoadOptions, DecodeOptions, RunControl) if f in dataclasses.fields(cls))
            with pytest.raises(UsageError):
                owner(**{f.name: type(high)(high) * 2 + 1})
        if meta["flag"] is None:
            assert meta["commands"] == (), f"{f.name}: library-only options are a flag of no command"
            continue
        for spelling in meta["flag"].split("/"):
            declared.add(spelling)
        first = meta["flag"].split("/")[0]
        assert f"`{first}`" in table or f"`{first} " in table, f"{first} has no row in README's options table"
    assert {flag for _, flag, _, _ in ENGINE_OPTIONS} == {f.metadata["flag"] for f in option_fields()
                                                         if f.metadata["flag"] and "transcribe" in f.metadata["commands"]}
    source = (Path(__file__).resolve().parents[1] / "whisperctl" / "config.py").read_text()
    named = set(re.findall(r"(--[a-z][a-z-]+)(?![a-z_-])", source))  # (not openai-whisper's --clip_timestamps)
    others = {"--config", "--compare", "--models", "--output-dir"}  # flags of commands, not options
    assert named - declared - others == set(), named - declared - others
