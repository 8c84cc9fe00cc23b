"""``whisperctl transcribe --server URL``: the files go to a running ``whisperctl serve``, no model is loaded here.

:class:`RemoteTranscriber` gives the events :meth:`whisperctl.engine.Transcriber.events` gives (each input's
segments, then its ``FileDone``), so the CLI writes stdout and ``--output-dir`` exactly as for a local run. It asks
for ``response_format=whisperctl_json`` (the CLI's own JSON: every field a local transcript has) and sends the
decoding options given on the command line as the server's extra fields. Several files are in flight at once
(the server batches them). Standard library only (urllib): no torch, no HTTP package to import.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

from ..config import DecodeOptions, Task, Timestamps
from ..errors import AudioError, UsageError, WhisperctlError
from ..inputs import AudioInput
from ..results import Transcript
from ..transcript import Event, FileDone, SegmentReady

ENV = "WHISPERCTL_SERVER"
IN_FLIGHT = 8  # files sent at once (the server's default batch)


class RemoteTranscriber:
    """Sends each input to ``url`` (``http://host:port``, with or without ``/v1``) with ``fields`` (decoding options
    by name, as :func:`fields_for` makes them)."""

    def __init__(self, url: str, fields: dict[str, str], api_key: str | None = None, timeout: float = 3600.0):
        try:
            parsed = urllib.parse.urlparse(url if "://" in url else "http://" + url)
            parsed.port  # noqa: B018 - a port that is no number raises here
        except ValueError:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"--server {url}: give the server's address, e.g. http://127.0.0.1:8000.")
        base = parsed._replace(path=parsed.path.rstrip("/").removesuffix("/v1"), query="", fragment="").geturl()
        self.url, self.fields, self.api_key, self.timeout = base, dict(fields), api_key, timeout
        translate = self.fields.pop("task", "transcribe") == Task.TRANSLATE.value
        self.endpoint = f"{self.url}/v1/audio/{'translations' if translate else 'transcriptions'}"
        self._check()

    def _check(self) -> None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=10) as r:
                health = json.load(r)
        except urllib.error.HTTPError as exc:  # 503 while the model loads: say so, do not wait forever
            raise WhisperctlError(f"--server {self.url}: not ready (HTTP {exc.code}); retry when GET /health says ready.") from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WhisperctlError(f"--server {self.url}: cannot reach it ({reason}). Start one with `whisperctl serve`.") from None
        self.model = health.get("model")

    def events(self, sources: Iterable[str], progress: Any = None, resume: Any = None,
               checkpoints: bool = False) -> Iterator[Event]:
        """Each input's segments then its FileDone, in input order; a failed request fails only its input."""
        names = list(sources)
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(self._one, name) for name in names]
            try:
                for name, future in zip(names, futures):
                    source = AudioInput.from_arg(name)
                    try:
                        transcript = future.result()
                    except WhisperctlError as exc:
                        yield FileDone(source, exc)
                        continue
                    for segment in transcript.segments:
                        yield SegmentReady(source, segment)
                    if progress is not None:
                        progress(name, transcript.duration)
                    yield FileDone(source, transcript)
            finally:
                for future in futures:
                    future.cancel()

    def _one(self, name: str) -> Transcript:
        source = AudioInput.from_arg(name)
        try:
            data = sys.stdin.buffer.read() if source.path is None else source.path.read_bytes()
        except OSError as exc:
            raise AudioError(f"{name}: cannot read: {exc.strerror or exc}.") from None
        filename = "stdin" if source.path is None else source.path.name
        body, boundary = _multipart({**self.fields, "response_format": "whisperctl_json"}, filename, data)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                payload = json.load(r)
        except urllib.error.HTTPError as exc:
            raise _server_error(name, filename, exc) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # also a server that died mid-answer
            raise WhisperctlError(f"{name}: the server at {self.url} failed to answer: {getattr(exc, 'reason', exc)}") from None
        payload["source"] = name
        return Transcript.from_dict(payload)


def _server_error(name: str, filename: str, exc: urllib.error.HTTPError) -> WhisperctlError:
    try:
        message = json.load(exc)["error"]["message"]
    except Exception:  # noqa: BLE001 - not OpenAI's error shape: say the status
        message = f"HTTP {exc.code}"
    message = f"{name}: {message.removeprefix(filename + ': ')}"  # the server knows the file by its base name
    return (AudioError if exc.code in (400, 413) else UsageError if exc.code in (401, 404) else WhisperctlError)(
        f"{message} (server {exc.code})")


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{v}\r\n'.encode())
    safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), boundary


def fields_for(overrides: dict[str, Any]) -> dict[str, Any]:
    """The form fields for the decoding options given on the command line; load-time options belong to the
    server (a usage error here)."""
    decode = {f for f in DecodeOptions.__dataclass_fields__}
    theirs = sorted(k for k in overrides if k not in decode or k == "batch_size")
    if theirs:
        from ..config import flag

        raise UsageError(f"--server: {', '.join(flag(k) for k in theirs)}: the server's own option(s); set them on "
                         "`whisperctl serve` and give only decoding options here.")
    fields: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "initial_prompt":
            fields["prompt"] = str(value)
        elif key == "timestamps":
            if str(getattr(value, "value", value)) == Timestamps.WORD.value:
                fields["timestamp_granularities[]"] = ["word", "segment"]
        elif key in ("temperature", "clip_timestamps") and isinstance(value, (tuple, list)):
            fields[key] = ",".join(str(v) for v in value)
        else:
            fields[key] = str(value).lower() if isinstance(value, bool) else str(getattr(value, "value", value))
    return fields


def server_url(flag_value: str | None) -> str | None:
    return flag_value or os.environ.get(ENV) or None
