"""OpenAI's audio API as whisperctl reads and writes it: request fields → decoding options, a transcript → each
``response_format``, errors in OpenAI's JSON shape. No web framework here (pure functions, tested directly)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from ..config import DEFAULT_TEMPERATURES, MAX_PROMPT_CHARS, DecodeOptions, Task, Timestamps
from ..errors import UsageError
from ..results import Transcript

FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "whisperctl_json")
MEDIA = {"json": "application/json", "verbose_json": "application/json", "whisperctl_json": "application/json",
         "text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
         "vtt": "text/vtt; charset=utf-8"}

#: whisperctl's own decoding options a request may set as extra form fields (named as in a TOML preset:
#: ``beam_size=5``, ``vad=none``); the model's load-time options and the server's batch size are the server's.
EXTRA_FIELDS = frozenset(f.name for f in dataclasses.fields(DecodeOptions)
                         if f.metadata.get("flag") and f.name not in ("batch_size", "language", "initial_prompt",
                                                                      "task", "timestamps", "temperature"))


@dataclasses.dataclass(frozen=True)
class Request:
    """One request's fields, checked."""

    options: DecodeOptions
    prompt: str | None
    response_format: str
    stream: bool
    words: bool


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def parse_request(fields: Mapping[str, Any], granularities: list[str], base: DecodeOptions, translate: bool) -> Request:
    """The request's decoding options over the server's (``base``). Unknown fields are ignored, as OpenAI does;
    a bad value is a :class:`UsageError` naming its field."""
    response_format = str(fields.get("response_format") or "json")
    if response_format not in FORMATS:
        raise UsageError(f"response_format '{response_format}': use one of {', '.join(FORMATS)}.")
    bad = sorted(set(granularities) - {"segment", "word"})
    if bad:
        raise UsageError(f"timestamp_granularities[]: '{bad[0]}' is not segment or word.")
    words = "word" in granularities
    if words and response_format not in ("verbose_json", "whisperctl_json"):
        raise UsageError("timestamp_granularities[]=word needs response_format verbose_json (as OpenAI's API).")
    changes: dict[str, Any] = {"task": Task.TRANSLATE if translate else Task.TRANSCRIBE}
    if words:
        changes["timestamps"] = Timestamps.WORD
    language = fields.get("language")
    if language and not translate:
        changes["language"] = str(language).strip().lower()
    temperature = fields.get("temperature")
    if temperature not in (None, "") and "," in str(temperature):  # whisperctl's own fallback list (--server)
        changes["temperature"] = tuple(_number(x, "temperature", float) for x in str(temperature).split(","))
    elif temperature not in (None, ""):
        t = _number(temperature, "temperature", float)
        if not 0.0 <= t <= 1.0:
            raise UsageError(f"temperature {t:g}: must be between 0 and 1.")
        # 0 (OpenAI's default): decode greedily and raise the temperature where the decode fails, as OpenAI
        # describes it; t > 0: start at t, then the hotter steps of the same fallback
        changes["temperature"] = DEFAULT_TEMPERATURES if t == 0 else (t, *(x for x in DEFAULT_TEMPERATURES if x > t))
    for name in EXTRA_FIELDS & set(fields):
        changes[name] = _extra(name, fields[name])
    try:
        options = base.replace(**changes)
    except UsageError as exc:
        raise UsageError(f"{exc} (form fields are named as in a preset: {', '.join(sorted(EXTRA_FIELDS))})") from None
    prompt = fields.get("prompt")
    if prompt and len(str(prompt)) > MAX_PROMPT_CHARS:  # what the CLI's --initial-prompt allows
        raise UsageError(f"prompt: {len(str(prompt))} characters; at most {MAX_PROMPT_CHARS} "
                         "(Whisper keeps only the last 223 tokens of a prompt).")
    stream = str(fields.get("stream", "false")).strip().lower() in ("true", "1", "yes")
    return Request(options, str(prompt) if prompt else None, response_format, stream, words)


def _number(value: Any, name: str, kind: type) -> Any:
    try:
        return kind(str(value).strip())
    except ValueError:
        raise UsageError(f"{name} '{value}': not a number.") from None


def _extra(name: str, value: Any) -> Any:
    field = next(f for f in dataclasses.fields(DecodeOptions) if f.name == name)
    kind = field.metadata["cli_type"]
    if kind is bool:
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"{name} '{value}': use true or false.")
        return text in ("true", "1", "yes")
    if kind in (int, float):
        return _number(value, name, kind)
    return str(value)


def language_name(code: str | None) -> str:
    """OpenAI names the language in full ("english")."""
    if not code:
        return ""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return LANGUAGES.get(code, code)


def verbose(t: Transcript, task: Task, words: bool) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: the text, the segments with openai-whisper's quality fields, and the words."""
    segments = [{
        "id": i, "seek": int(round(s.start * 100)), "start": s.start, "end": s.end, "text": s.text,
        "tokens": list(s.tokens), "temperature": s.temperature or 0.0, "avg_logprob": _num(s.avg_logprob),
        "compression_ratio": _num(s.compression_ratio), "no_speech_prob": _num(s.no_speech_prob),
    } for i, s in enumerate(t.segments)]
    out: dict[str, Any] = {"task": task.value, "language": language_name(t.language), "duration": t.duration,
                           "text": t.text, "segments": segments}
    if words:
        out["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                        for s in t.segments for w in (s.words or [])]
    out["usage"] = {"type": "duration", "seconds": t.duration}
    return out


def _num(value: float | None) -> float:
    return float(value) if value is not None else 0.0


def render(t: Transcript, request: Request) -> tuple[str, str]:
    """(body, media type) of ``t`` in the request's ``response_format``; text, srt and vtt are the CLI's writers'
    output, byte for byte."""
    from .. import writers

    fmt = request.response_format
    if fmt == "json":
        body = json.dumps({"text": t.text, "usage": {"type": "duration", "seconds": t.duration}}, ensure_ascii=False)
    elif fmt == "verbose_json":
        body = json.dumps(verbose(t, request.options.task, request.words), ensure_ascii=False)
    elif fmt == "whisperctl_json":  # the CLI's json output (what `transcribe --server` writes from)
        body = writers.to_json(t)
    else:
        body = {"text": writers.to_txt, "srt": writers.to_srt, "vtt": writers.to_vtt}[fmt](t)
    return body, MEDIA[fmt]


def sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
