"""``whisperctl serve`` as a running process on 127.0.0.1, called through the official ``openai`` client and plain
HTTP: every response format, words, streaming, errors with their status codes, concurrent clients against one
at a time, a client that goes away, a full queue, SIGTERM with a request in flight. Bounded: a few requests each,
short clips, a timeout on everything."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES

openai = pytest.importorskip("openai")
try:  # the openai client's own HTTP library (httpx2 in openai 3, httpx before)
    import httpx2 as httpx
except ImportError:
    httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

KEY = "test-key-123"
SHORT = EXAMPLES / "short.wav"  # 7.9 s, espeak
LONG = EXAMPLES / "long.flac"  # 73 s: two sections


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str, key: str | None = KEY):
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        extra = ["--api-key", key] if key else []
        env = {k: v for k, v in os.environ.items() if k != "WHISPERCTL_API_KEY"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from whisperctl.cli import main; main()", "serve", "--port", str(self.port),
             *extra, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError("serve did not become ready in 120 s")

    def client(self, key: str = KEY):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode()


@pytest.fixture(scope="module")
def server(bundled_checkpoint):
    s = Server("--batch-size", "4", "--max-queue", "2", "--max-upload-mb", "3", "--max-duration", "100")
    yield s
    code, err = s.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


@pytest.fixture(scope="module")
def local():
    """What the library gives for the same files and options, in this process."""
    from whisperctl import Transcriber

    return Transcriber()


def _wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_every_format_is_what_the_cli_writes(server, local):
    from whisperctl import writers

    client = server.client()
    expected = local.transcribe(str(SHORT))
    with SHORT.open("rb") as fh:
        assert client.audio.transcriptions.create(model="tiny.en", file=fh).text == expected.text
    for fmt, writer in (("text", writers.to_txt), ("srt", writers.to_srt), ("vtt", writers.to_vtt)):
        with SHORT.open("rb") as fh:
            body = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format=fmt)
        assert body == writer(expected), fmt
    with SHORT.open("rb") as fh:
        verbose = client.audio.transcriptions.create(model="tiny.en", file=fh, response_format="verbose_json")
    assert verbose.language == "english" and abs(verbose.duration - expected.duration) < 1e-6
    assert [(s.start, s.end, s.text) for s in verbose.segments] == [(s.start, s.end, s.text) for s in expected.segments]
    assert verbose.words is None


def test_word_timestamps_are_returned(server, local):
    from whisperctl.config import Timestamps

    expected = local.transcribe(str(SHORT), local.options.replace(timestamps=Timestamps.WORD))
    with SHORT.open("rb") as fh:
        got = server.client().audio.transcriptions.create(model="tiny.en", file=fh, response_format="verbose_json",
                                                          timestamp_granularities=["word", "segment"])
    words = [w for s in expected.segments for w in s.words]
    assert len(got.words) == len(words) > 5
    assert [(w.word, w.start, w.end) for w in got.words] == [(w.word.strip(), w.start, w.end) for w in words]
    assert all(w.end >= w.start for w in got.words)


def test_streaming_gives_deltas_then_the_text(server, local):
    expected = local.transcribe(str(LONG))  # (many segments on any kernels; the short clip is one with AVX2's)
    with LONG.open("rb") as fh:
        events = list(server.client().audio.transcriptions.create(model="tiny.en", file=fh, stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) == len(expected.segments) >= 2 and events[-1].type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == events[-1].text == expected.text


def test_concurrent_clients_get_what_each_gets_alone(server):
    client = server.client()
    files = [LONG, SHORT, LONG]

    def one(path: Path):
        with path.open("rb") as fh:
            r = client.audio.transcriptions.create(model="tiny.en", file=fh, response_format="verbose_json")
        return r.text, [(s.start, s.end, s.text, s.tokens) for s in r.segments]

    alone = [one(p) for p in files]
    with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
        together = list(pool.map(one, files))
    assert together == alone
    batches = [line for line in server.metrics().splitlines() if line.startswith("whisperctl_batch_windows_bucket")]
    assert batches and 'le="1"' in batches[0]
    ones, total = int(batches[0].split()[-1]), int(batches[-1].split()[-1])
    assert total > ones, "no batch ever held windows of two requests"


def test_errors_have_openai_shape_and_status(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError, match="serves 'tiny.en'"):
        client.audio.transcriptions.create(model="large-v3", file=SHORT.open("rb"))
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").audio.transcriptions.create(model="tiny.en", file=SHORT.open("rb"))
    with pytest.raises(openai.BadRequestError, match="not an audio file|corrupt"):
        client.audio.transcriptions.create(model="tiny.en", file=("x.wav", b"RIFF" + os.urandom(3000)))
    with pytest.raises(openai.BadRequestError, match="no audio"):
        client.audio.transcriptions.create(model="tiny.en", file=("empty.wav", _wav(np.zeros(0, np.float32))))
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(model="tiny.en", file=SHORT.open("rb"), response_format="docx")
    with pytest.raises(openai.BadRequestError, match="beam"):
        client.audio.transcriptions.create(model="tiny.en", file=SHORT.open("rb"), extra_body={"beam_size": "0"})
    with pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.transcriptions.create(model="tiny.en", file=SHORT.open("rb"), language="de")
    big = np.zeros(16000 * 101, np.float32)  # 101 s: over --max-duration 100 (3.2 MB: over --max-upload-mb 3 too)
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="tiny.en", file=("big.wav", _wav(big)))
    assert info.value.status_code == 413 and "3145728 bytes" in str(info.value)
    with pytest.raises(openai.APIStatusError) as info:
        client.audio.transcriptions.create(model="tiny.en", file=("long.flac", _flac(big)))
    assert info.value.status_code == 413 and "max-duration" in str(info.value)
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(server.url + "/v1/audio/transcriptions", headers={**headers, "Content-Type": "multipart/form-data; boundary=zz"},
                   content=b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nabc", timeout=30)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(server.url + "/v1/audio/transcriptions", headers=headers, data={"model": "tiny.en"}, timeout=30)
    assert r.status_code == 400 and "file" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/nothing", headers=headers, timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    assert httpx.get(server.url + "/v1/models", timeout=10).status_code == 401
    models = httpx.get(server.url + "/v1/models", headers=headers, timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["tiny.en", "whisper-1"]
    health = httpx.get(server.url + "/health", timeout=10).json()
    assert health["ready"] and health["live"]
    # the server is still there and answers
    assert client.audio.transcriptions.create(model="tiny.en", file=SHORT.open("rb")).text


def _flac(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="FLAC")
    return buf.getvalue()


def test_a_client_that_goes_away_is_cancelled(server):
    """A client that disconnects mid-request frees its lanes: the server counts it cancelled and answers the next."""
    headers = {"Authorization": f"Bearer {KEY}"}
    data = LONG.read_bytes()

    def cancelled() -> int:
        line = next((l for l in server.metrics().splitlines() if 'outcome="cancelled"' in l), None)
        return int(float(line.split()[-1])) if line else 0

    before = cancelled()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/audio/transcriptions", headers=headers, files={"file": ("long.flac", data)},
                   timeout=httpx.Timeout(30, read=1.5))
    deadline = time.monotonic() + 30
    while cancelled() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cancelled() == before + 1
    started = time.monotonic()
    assert server.client().audio.transcriptions.create(model="tiny.en", file=SHORT.open("rb")).text
    assert time.monotonic() - started < 30  # not queued behind the abandoned 73 s


def test_a_full_queue_answers_429_with_retry_after(server):
    """--batch-size 4 --max-queue 2: six requests in flight at most; more get 429 at once."""
    headers = {"Authorization": f"Bearer {KEY}"}
    data = SHORT.read_bytes()
    statuses: list[tuple[int, str | None]] = []

    def one(_):
        r = httpx.post(server.url + "/v1/audio/transcriptions", headers=headers, files={"file": ("short.wav", data)},
                       timeout=300)
        statuses.append((r.status_code, r.headers.get("retry-after")))

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        list(pool.map(one, range(9)))
    codes = sorted(code for code, _ in statuses)
    assert codes.count(200) >= 6 and codes.count(429) >= 1 and set(codes) <= {200, 429}, statuses
    assert all(after and int(after) >= 1 for code, after in statuses if code == 429)


def test_sigterm_lets_requests_in_flight_finish(bundled_checkpoint):
    s = Server(key=None)
    result: dict = {}

    def call():
        with SHORT.open("rb") as fh:
            result["text"] = s.client().audio.transcriptions.create(model="tiny.en", file=fh).text

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 30
    while httpx.get(s.url + "/health", timeout=5).json()["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    code, err = s.stop()
    thread.join(60)
    assert code == 0, err
    assert len(result.get("text", "")) > 50, err
    with pytest.raises(httpx.TransportError):
        httpx.get(s.url + "/health", timeout=2)


def test_cli_server_flag_writes_what_a_local_run_writes(server, tmp_path, capsys):
    """`transcribe --server URL`: the files go to the server; stdout and -o get what a local run writes."""
    from conftest import run_cli

    files = [SHORT]
    env = {**os.environ, "WHISPERCTL_API_KEY": KEY}
    cli = [sys.executable, "-c", "from whisperctl.cli import main; main()", "transcribe"]
    remote = subprocess.run([*cli, *map(str, files), "-f", "srt", "--server", server.url], env=env, capture_output=True,
                            timeout=300)
    assert remote.returncode == 0, remote.stderr
    code, local, err = run_cli(["transcribe", *files, "-f", "srt"], capsys)
    assert code == 0 and remote.stdout.decode() == local
    out = tmp_path / "out"
    done = subprocess.run([*cli, str(SHORT), "-o", str(out), "-f", "all"], capture_output=True, timeout=300,
                          env={**env, "WHISPERCTL_SERVER": server.url + "/v1"})
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("short.*")) == ["short.json", "short.srt", "short.tsv", "short.txt", "short.vtt"]
    written = json.loads((out / "short.json").read_text())
    assert written["source"] == str(SHORT) and written["segments"] and written["runtime"]["decoder"] == "lean"
    refused = subprocess.run([*cli, str(SHORT), "--server", server.url, "--model", "small"], env=env,
                             capture_output=True, timeout=60)
    assert refused.returncode == 2 and b"--model" in refused.stderr
    bad = subprocess.run([*cli, "/etc/hostname", "--server", server.url], env=env, capture_output=True, timeout=60)
    assert bad.returncode == 1 and b"/etc/hostname: " in bad.stderr and b"server 400" in bad.stderr
    gone = subprocess.run([*cli, str(SHORT), "--server", f"http://127.0.0.1:{_port()}"], env=env, capture_output=True,
                          timeout=60)
    assert gone.returncode == 1 and b"cannot reach it" in gone.stderr and len(gone.stderr.splitlines()) == 1


def test_cli_server_flag_does_not_import_torch(server):
    probe = ("import sys; from whisperctl.cli import main; sys.argv = ['whisperctl', 'transcribe', %r, '--server', %r]\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print('torch' in sys.modules, 'transformers' in sys.modules)") % (str(SHORT), server.url)
    done = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "WHISPERCTL_API_KEY": KEY},
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "False False"


@pytest.mark.slow
def test_translation_with_the_multilingual_model(tmp_path):
    """/v1/audio/translations on --model base-pypi: Spanish speech comes back as English text."""
    import soundfile as sf

    from whisperctl import audio as audio_mod

    spanish = EXAMPLES.parents[1] / "shared" / "speech-multilingual" / "es_capitan_veneno.mp3"
    if not spanish.is_file():
        pytest.skip("../shared/speech-multilingual is not available")
    clip = tmp_path / "es.wav"
    sf.write(clip, audio_mod.load(spanish)[: 16000 * 20], 16000)
    s = Server("--model", "base-pypi", key=None)
    try:
        client = s.client()
        english = client.audio.translations.create(model="base-pypi", file=clip.open("rb")).text.lower()
        spanish_text = client.audio.transcriptions.create(model="base-pypi", file=clip.open("rb"), language="es").text.lower()
    finally:
        code, err = s.stop()
    assert code == 0, err
    assert any(w in english.split() for w in ("the", "of", "my", "to")), english
    assert any(w in spanish_text.split() for w in ("de", "la", "el", "mi")), spanish_text
    assert english != spanish_text


def test_a_client_that_goes_away_mid_upload_is_counted_without_a_traceback(server):
    """Half a body, then the connection closes: counted as cancelled, the slot freed, no traceback in the log
    (the module fixture checks the log at the end)."""

    def cancelled() -> int:
        line = next((l for l in server.metrics().splitlines() if 'outcome="cancelled"' in l), None)
        return int(float(line.split()[-1])) if line else 0

    before = cancelled()
    body = (b'--BB\r\nContent-Disposition: form-data; name="file"; filename="long.flac"\r\n\r\n' + LONG.read_bytes()
            + b"\r\n--BB--\r\n")
    head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=BB\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while cancelled() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancelled() == before + 1
    assert "whisperctl_in_flight 0" in server.metrics()


def test_a_prompt_longer_than_the_cli_allows_is_refused(server):
    from whisperctl.config import MAX_PROMPT_CHARS

    r = httpx.post(server.url + "/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
                   files={"file": ("short.wav", SHORT.read_bytes())}, data={"prompt": "hello " * MAX_PROMPT_CHARS},
                   timeout=30)
    assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]


def test_server_flag_bad_urls_and_a_server_that_dies_mid_answer():
    """Usage errors for addresses that cannot be parsed; a server that closes mid-answer fails that file with an
    error naming the server (not an internal error)."""
    from whisperctl.errors import UsageError, WhisperctlError
    from whisperctl.serve.client import RemoteTranscriber

    for url in ("http://[::1", "http://127.0.0.1:abc"):
        with pytest.raises(UsageError):
            RemoteTranscriber(url, {})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve_badly() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                request = conn.recv(65536)
                if b"/health" in request:
                    body = b'{"ready": true, "model": "tiny.en"}'
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                    continue
                conn.settimeout(1)
                try:
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nContent-Type: application/json\r\n\r\n{"te')

    thread = threading.Thread(target=serve_badly, daemon=True)
    thread.start()
    try:
        remote = RemoteTranscriber(f"http://127.0.0.1:{listener.getsockname()[1]}", {}, timeout=30)
        done = list(remote.events([str(SHORT)]))
    finally:
        thread.join(30)
        listener.close()
    assert len(done) == 1 and isinstance(done[0].result, WhisperctlError)
    assert "failed to answer" in str(done[0].result)
