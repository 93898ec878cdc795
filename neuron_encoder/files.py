"""Small file habits every writer shares: atomic writes, safe file names, UTC timestamps."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and os.replace, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())


def safe_name(text: str) -> str:
    """A file-name fragment from free text (a model id, a host name): the last path part, with anything
    but letters, digits, '.', '_' and '-' replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(text)).name or str(text))


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the second with a Z: manifests and results from any machine sort."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp(moment: str | None = None) -> str:
    """A UTC time for file names, 20261202T051500Z; from a utc_now() string when given."""
    when = (dt.datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ") if moment
            else dt.datetime.now(dt.timezone.utc))
    return when.strftime("%Y%m%dT%H%M%SZ")



def read_text_file(path: Path, what: str, error: type[Exception]) -> str:
    """A user's text file (a config, a result, a price table), or `error` with one line naming the
    file and what is wrong: missing, unreadable, or not UTF-8 text."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text, so not JSON or CSV ({exc.reason})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def read_json_file(path: Path, what: str, error: type[Exception]) -> Any:
    """read_text_file, then parse_json."""
    return parse_json(read_text_file(path, what, error), Path(path), error)


def parse_json(text: str, path: Path, error: type[Exception]) -> Any:
    """JSON from a user's file, or `error` saying where it stops being JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
