"""``whisperctl serve``: OpenAI's audio API on one loaded model, every request's windows in shared batches."""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import EngineConfig
from ..errors import UsageError
from ..presets import load_config_file
from . import app
from .options import engine_options, engine_overrides, set_verbosity, verbose_option

INSTALL = "pip install 'whisperctl[serve]'"


@app.command()
@engine_options
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="WHISPERCTL_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on /v1 and /metrics (or set WHISPERCTL_API_KEY)."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", help="Largest upload accepted (413 above)."),
    max_duration: float = typer.Option(4 * 3600.0, "--max-duration", help="Longest audio accepted, in seconds (413 above)."),
    max_queue: int = typer.Option(64, "--max-queue", help="Requests that may wait beyond the batch's lanes (429 with Retry-After above)."),
    drain_timeout: float = typer.Option(600.0, "--drain-timeout", help="On SIGTERM/Ctrl-C: seconds to let requests in flight finish."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML preset (see configs/); flags override it."),
    verbose: bool = verbose_option(),
    **engine: Any,
) -> None:
    """Serve OpenAI's audio API (/v1/audio/transcriptions, /translations) with cross-request batching."""
    set_verbosity(verbose)
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError(f"serve needs a web server stack: {INSTALL}") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: use 1-65535.")
    for value, flag in ((max_upload_mb, "--max-upload-mb"), (max_duration, "--max-duration"), (drain_timeout, "--drain-timeout")):
        if not value > 0:
            raise UsageError(f"{flag} {value:g}: must be above 0.")
    if max_queue < 0:
        raise UsageError(f"--max-queue {max_queue}: must be 0 or more.")
    if api_key is not None and (not api_key.strip() or api_key != api_key.strip() or not api_key.isascii()):
        raise UsageError("--api-key: give a non-empty key of ASCII characters without leading or trailing spaces "
                         "(clients send it in an HTTP header), or leave the option out.")
    preset: dict[str, Any] = load_config_file(config_file)["engine"] if config_file is not None else {}
    config = EngineConfig.from_mapping({**preset, **engine_overrides(engine)})

    from ..engine import Transcriber
    from ..errors import WhisperctlError
    from ..serve.app import Limits, Server, create_app
    from ..serve.batcher import ModelThread

    transcriber = Transcriber(config)  # validates and plans: bad flags fail here, before the model loads
    model_thread = ModelThread()
    server = Server(transcriber, config.model, Limits(int(max_upload_mb * 1024 * 1024), max_duration),
                    transcriber.options.batch_size + max_queue, api_key, model_thread)
    if not _loopback(host) and api_key is None:
        typer.echo(f"whisperctl: WARNING: listening on {host} without --api-key: anyone who reaches it can use it.",
                   err=True)
    # The web server runs on a thread; this (main) thread loads the model and runs every decode (ModelThread says
    # why). SIGTERM/Ctrl-C: stop accepting, let requests in flight finish, then exit.
    web = uvicorn.Server(uvicorn.Config(create_app(server), host=host, port=port, lifespan="on",
                                        log_level="info" if verbose else "warning", access_log=verbose,
                                        timeout_graceful_shutdown=int(drain_timeout)))
    http = threading.Thread(target=web.run, name="whisperctl-http", daemon=True)
    stops: list[int] = []

    def stop(signum, frame) -> None:  # noqa: ARG001
        stops.append(signum)
        web.should_exit = True
        if len(stops) > 1:  # a second signal: do not wait for the requests in flight
            web.force_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    http.start()
    typer.echo(f"whisperctl: serving {config.model} on http://{host}:{port}/v1 (batch {transcriber.options.batch_size}, "
               f"pid {os.getpid()}); loading the model, GET /health says when it is ready", err=True)
    server.load()
    if server.load_error:
        web.should_exit = True
        http.join(30)
        raise WhisperctlError(server.load_error)
    model_thread.run(until=lambda: not http.is_alive())
    if not web.started:
        raise WhisperctlError(f"could not listen on {host}:{port} (in use, or not an address of this machine).")
    typer.echo("whisperctl: server stopped" + (" (requests in flight finished)" if stops else ""), err=True)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
