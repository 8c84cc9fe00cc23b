"""``whisperctl serve``'s web part: OpenAI's audio API over a :class:`~whisperctl.serve.batcher.Batcher` (Starlette).

Routes: ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` (OpenAI's multipart fields), ``GET
/v1/models``, ``GET /health`` (live; ready once the model is loaded), ``GET /metrics`` (Prometheus). Every error is
one line in OpenAI's JSON shape with its status: 400 bad field or audio, 401 key, 404 model or route, 413 upload
or duration over the limits, 429 busy (``Retry-After``), 503 loading, 500 a decode that failed (only its own
request). An upload is spooled to a private temporary file and decoded in a worker thread; a client's file name
is only ever shown, never used as a path. A client that goes away cancels its request (its lanes are freed at
the next batch).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import audio as audio_mod
from ..errors import AudioError, OutOfMemoryError, UsageError, WhisperctlError
from ..inputs import AudioInput
from ..results import Transcript
from ..runners import Cancelled
from ..transcript import FileDone, SegmentReady
from . import openai_api
from .batcher import Batcher, Busy, Job, ModelThread
from .metrics import Metrics


@dataclasses.dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 100 * 1024 * 1024
    max_duration_s: float = 4 * 3600.0


class _TooLarge(Exception):
    pass


class _Failure(Exception):
    """An HTTP error to answer with: status, OpenAI error body, extra headers."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, openai_api.error_body(message, kind, param, code), headers


class Server:
    """The app's state: the transcriber (loaded in the background at start), its batcher, names and limits."""

    def __init__(self, transcriber: Any, model_name: str, limits: Limits, max_in_flight: int,
                 api_key: str | None = None, model_thread: ModelThread | None = None):
        self.transcriber, self.limits = transcriber, limits
        self.batcher = batcher = Batcher(transcriber, max_in_flight, on_batch=lambda n: self.metrics.batch_size(n),
                                         model_thread=model_thread)
        self.model_name = model_name
        self.names = (model_name, "whisper-1")  # whisper-1: what OpenAI's examples and most clients send
        self.api_key = api_key
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.metrics = Metrics({
            "whisperctl_in_flight": ("Requests admitted and not answered.", lambda: batcher.in_flight),
            "whisperctl_queued": ("Requests waiting for a lane.", lambda: batcher.queued),
            "whisperctl_ready": ("1 once the model is loaded.", lambda: int(self.ready.is_set())),
        })

    def load(self) -> None:
        """Load the model and transcribe the bundled example once, on the thread that will run the model;
        ``/health`` says ready once done.

        The warm-up is not cosmetic: without one whole transcription on this thread first, every later decode
        handed to it from the groups' threads ran 1.5x slower on the CPU (a 13 s clip: 1.0 s against 0.64 s,
        medians of 5, for as long as the process lived); one transcription of the 8 s example removes it."""
        try:
            self.transcriber.load()
            example = Path(__file__).resolve().parents[1] / "data" / "example.flac"
            if example.is_file():
                self.transcriber.transcribe(str(example))
            self.ready.set()
        except WhisperctlError as exc:
            self.load_error = str(exc)

    # ------------------------------------------------------------------ routes
    async def health(self, request: Request) -> Response:
        if self.load_error:
            return JSONResponse({"status": "error", "live": True, "ready": False, "error": self.load_error}, 503)
        ready = self.ready.is_set()
        return JSONResponse({"status": "ok" if ready else "loading", "live": True, "ready": ready,
                             "model": self.model_name, "in_flight": self.batcher.in_flight}, 200 if ready else 503)

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        return JSONResponse({"object": "list", "data": [self._model(n) for n in self.names]})

    async def model(self, request: Request) -> Response:
        self._authorize(request)
        name = request.path_params["name"]
        if name not in self.names:
            raise self._no_model(name)
        return JSONResponse(self._model(name))

    async def metrics_text(self, request: Request) -> Response:
        self._authorize(request)
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def transcriptions(self, request: Request) -> Response:
        return await self._audio(request, translate=False)

    async def translations(self, request: Request) -> Response:
        return await self._audio(request, translate=True)

    # ------------------------------------------------------------------ the audio endpoints
    async def _audio(self, request: Request, translate: bool) -> Response:
        endpoint = "translations" if translate else "transcriptions"
        started = time.monotonic()
        release = None
        streaming = False
        try:
            self._authorize(request)
            if not self.ready.is_set():
                raise _Failure(503, self.load_error or "the model is still loading; retry shortly", "server_error",
                               headers={"Retry-After": "2"})
            try:
                release = self.batcher.reserve()
            except Busy as exc:
                raise _Failure(429, str(exc), "rate_limit_error", "busy", headers={"Retry-After": str(exc.retry_after)})
            form = await self._form(request)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise _Failure(400, "file: required (multipart/form-data with the audio as 'file')", param="file")
            model = form.get("model")
            if model and str(model) not in self.names:
                raise self._no_model(str(model))
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            try:
                parsed = openai_api.parse_request(fields, form.getlist("timestamp_granularities[]"),
                                                  self.transcriber.options, translate)
            except UsageError as exc:
                raise _Failure(400, str(exc)) from None
            name = _display_name(upload.filename)
            samples = await run_in_threadpool(self._read_audio, upload, name)
            await upload.close()
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()

            def deliver(event: Any) -> None:
                if parsed.stream and isinstance(event, FileDone):
                    release()  # (also when the stream was dropped before it started: the slot goes with the job)
                try:
                    loop.call_soon_threadsafe(events.put_nowait, event)
                except RuntimeError:  # the event loop is gone (shutdown): nobody is waiting
                    pass

            job = Job(self.batcher.name(name), samples, parsed.options, parsed.prompt, deliver)
            try:
                await run_in_threadpool(self.batcher.submit, job)
            except Busy as exc:
                raise _Failure(503, str(exc), "server_error", headers={"Retry-After": str(exc.retry_after)})
            except UsageError as exc:
                raise _Failure(400, str(exc)) from None
            if parsed.stream:
                streaming = True
                return StreamingResponse(self._sse(job, events, release, endpoint, started), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            result = await self._wait(request, job, events)
            if result is None:  # the client went away
                self.metrics.request(endpoint, "cancelled", time.monotonic() - started)
                return Response(status_code=499)
            body, media = openai_api.render(result, parsed)
            self.metrics.request(endpoint, "200", time.monotonic() - started, result.duration)
            return Response(body, media_type=media)
        except _Failure as failure:
            self.metrics.request(endpoint, str(failure.status), time.monotonic() - started)
            return JSONResponse(failure.body, failure.status, headers=failure.headers)
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer, no traceback in the log
            self.metrics.request(endpoint, "cancelled", time.monotonic() - started)
            return Response(status_code=499)
        finally:
            if release is not None and not streaming:
                release()

    async def _form(self, request: Request) -> Any:
        """The multipart form, the upload counted as it arrives: over ``max_upload_bytes`` is a 413 at once."""
        limit = self.limits.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise self._too_large()
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _Failure(400, "the body must be multipart/form-data with the audio as 'file' (OpenAI's audio API)")
        received = 0
        upstream = request.receive

        async def counted() -> dict:
            nonlocal received
            message = await upstream()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit + 64 * 1024:
                    raise _TooLarge()
            return message

        limited = Request(request.scope, counted)
        try:
            form = await limited.form(max_files=1, max_fields=100, max_part_size=1024 * 1024)
        except _TooLarge:
            raise self._too_large() from None
        except HTTPException as exc:  # malformed multipart
            raise _Failure(400, f"malformed multipart body: {exc.detail}") from None
        upload = form.get("file")
        if upload is not None and not isinstance(upload, str) and upload.size is not None and upload.size > limit:
            raise self._too_large()
        return form

    def _read_audio(self, upload: Any, name: str) -> np.ndarray:
        """The upload decoded to 16 kHz mono (in a worker thread): 400 for audio that cannot be read or holds
        none, 413 past ``max_duration_s``."""
        suffix = os.path.splitext(name)[1].lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""
        with tempfile.NamedTemporaryFile(prefix="whisperctl-upload-", suffix=suffix) as tmp:
            upload.file.seek(0)
            shutil.copyfileobj(upload.file, tmp)
            tmp.flush()
            source = AudioInput(name, Path(tmp.name))
            blocks, total = [], 0
            limit = int(self.limits.max_duration_s * audio_mod.SAMPLE_RATE)
            try:
                for block in audio_mod.stream(source):
                    total += len(block)
                    if total > limit:
                        raise _Failure(413, f"{name}: longer than the server's limit of {self.limits.max_duration_s:g} s "
                                            "(--max-duration)", code="audio_too_long")
                    blocks.append(block)
            except AudioError as exc:
                raise _Failure(400, str(exc), param="file", code="invalid_audio") from None
        if not total:
            raise _Failure(400, f"{name}: holds no audio", param="file", code="invalid_audio")
        return np.concatenate(blocks)

    async def _wait(self, request: Request, job: Job, events: asyncio.Queue) -> Transcript | None:
        """The job's transcript; None if the client disconnected first (the job is then cancelled)."""
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while True:
                getting = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({getting, gone}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    self.batcher.cancel(job)
                    return None
                event = getting.result()
                if isinstance(event, FileDone):
                    return self._result(event)
        finally:
            gone.cancel()

    async def _sse(self, job: Job, events: asyncio.Queue, release: Any, endpoint: str, started: float):
        """Server-sent events as OpenAI streams a transcription: ``transcript.text.delta`` per settled segment,
        then ``transcript.text.done``; an error ends the stream with OpenAI's error object."""
        finished = False
        try:
            first = True
            while True:
                event = await events.get()
                if isinstance(event, SegmentReady):
                    text = event.segment.text.lstrip() if first else event.segment.text
                    first = first and not text
                    if text:
                        yield openai_api.sse({"type": "transcript.text.delta", "delta": text})
                    continue
                if not isinstance(event, FileDone):
                    continue
                finished = True
                try:
                    result = self._result(event)
                except _Failure as failure:
                    self.metrics.request(endpoint, str(failure.status), time.monotonic() - started)
                    yield openai_api.sse(failure.body)
                    return
                self.metrics.request(endpoint, "200", time.monotonic() - started, result.duration)
                yield openai_api.sse({"type": "transcript.text.done", "text": result.text,
                                      "usage": {"type": "duration", "seconds": result.duration}})
                return
        finally:
            if not finished:  # the client went away mid-stream
                self.batcher.cancel(job)
                self.metrics.request(endpoint, "cancelled", time.monotonic() - started)
            release()

    @staticmethod
    def _result(event: FileDone) -> Transcript:
        result = event.result
        if isinstance(result, Cancelled):
            raise _Failure(499, str(result))
        if isinstance(result, (AudioError, UsageError)):
            raise _Failure(400, str(result))
        if isinstance(result, OutOfMemoryError):
            raise _Failure(503, str(result), "server_error", "out_of_memory", headers={"Retry-After": "5"})
        if isinstance(result, Exception):
            raise _Failure(500, f"decoding failed: {result}", "server_error", "decode_failed")
        return result

    # ------------------------------------------------------------------ helpers
    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
            raise _Failure(401, "missing or wrong API key: send 'Authorization: Bearer <key>' (whisperctl serve "
                                "--api-key)", code="invalid_api_key")

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "whisperctl"}

    def _no_model(self, name: str) -> _Failure:
        return _Failure(404, f"model '{name}' is not served here; this server serves '{self.model_name}' "
                             "(also answers to 'whisper-1')", param="model", code="model_not_found")

    def _too_large(self) -> _Failure:
        return _Failure(413, f"the upload is larger than the server's limit of {self.limits.max_upload_bytes} bytes "
                             "(--max-upload-mb)", code="file_too_large")


async def _disconnected(request: Request, every_s: float = 0.25) -> None:
    """Returns when the client has gone away. Polled (Starlette's non-blocking check): after the body, the ASGI
    server may answer ``receive()`` at once with empty bodies, and awaiting it in a loop spun the event loop's
    thread at 100 % of a core, taking it from the decoder (requests were 1.7x slower than in process)."""
    while not await request.is_disconnected():
        await asyncio.sleep(every_s)


def _display_name(filename: str | None) -> str:
    base = os.path.basename((filename or "").replace("\\", "/"))
    base = "".join(c for c in base if c.isprintable())[:100]
    return base or "upload"


def create_app(server: Server) -> Starlette:
    """The ASGI app. It does not load the model: the caller runs :meth:`Server.load` on the model's thread
    (``/health`` answers 503 "loading" until then)."""

    async def failure(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Failure)
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else None
        return JSONResponse(openai_api.error_body(f"{request.method} {request.url.path}: {exc.detail}", code=code),
                            exc.status_code)

    import contextlib

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await run_in_threadpool(server.batcher.close, 60.0)

    routes = [
        Route("/v1/audio/transcriptions", server.transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", server.translations, methods=["POST"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{name:path}", server.model, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={_Failure: failure, HTTPException: http_error})
