"""One options layer for the three front ends (cli.py, compile/compile.py, benchmarks/bench.py):
strings or a config file's values become the library's option objects, with one set of defaults."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

from .backends import CompileOptions
from .errors import ConfigError, InputFileError
from .files import read_json_file
from .numerics import Tolerance

# The compile options a config job or a bench run may name, as keyword arguments of compile_options.
COMPILE_OPTION_KEYS = ("target", "auto_cast", "auto_cast_type", "optlevel", "compiler_args", "lnc")
TOLERANCE_KEYS = ("max_abs", "min_cosine", "max_logit_error")


def parse_sizes(text: str | Sequence[int], what: str) -> list[int]:
    """'1,8' -> [1, 8] (sorted, unique), refusing anything that is not a positive integer."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        sizes = sorted({int(str(item).strip()) for item in items if str(item).strip()})
    except ValueError:
        raise ConfigError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    if not sizes or sizes[0] <= 0:
        raise ConfigError(f"{what} must be positive integers, got {text!r}")
    return sizes


def compile_options(target: str | None = None, auto_cast: str = "auto", auto_cast_type: str = "bf16",
                    optlevel: int | str = 2, compiler_args: str | Sequence[str] = "",
                    lnc: int | str | None = None) -> CompileOptions:
    """CompileOptions from CLI strings or config values; compiler_args is one shell-quoted string or a list;
    lnc is trn2's logical NeuronCore config (1 or 2), refused for other targets when compiling."""
    level = _integer(optlevel, "optlevel", "1, 2 or 3")
    extra = shlex.split(compiler_args) if isinstance(compiler_args, str) else [str(a) for a in compiler_args]
    return CompileOptions(target=target or None, auto_cast=auto_cast, auto_cast_type=auto_cast_type,
                          optlevel=level, extra_args=tuple(extra),
                          lnc=None if lnc in (None, "") else _integer(lnc, "lnc", "1 or 2"))


def _integer(value: int | str, name: str, allowed: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} {value!r} must be {allowed}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {value!r} must be {allowed}") from None


def split_job(job: Mapping[str, Any]) -> tuple[CompileOptions, Tolerance, dict[str, Any]]:
    """A config job's compile options and tolerance, and the rest of its keys."""
    options = compile_options(**{k: job[k] for k in COMPILE_OPTION_KEYS if k in job})
    tolerance = Tolerance(**{k: float(job[k]) for k in TOLERANCE_KEYS if k in job})
    rest = {k: v for k, v in job.items() if k not in (*COMPILE_OPTION_KEYS, *TOLERANCE_KEYS)}
    return options, tolerance, rest


def load_config(path: str | Path, list_key: str, allowed: set[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A JSON config file {list_key: [{...}, ...], ...}: (the whole object, its checked entries).

    Every entry is an object whose keys are all in `allowed` (plus a free-text "note"); anything else
    is an InputFileError naming the file, the entry and the keys.
    """
    path = Path(path)
    config = read_json_file(path, "config file", InputFileError)
    entries = config.get(list_key) if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputFileError(f"{path}: expected a JSON object with a non-empty {list_key!r} list")
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise InputFileError(f"{path}: {list_key} entry {i} is not a JSON object")
        unknown = sorted(set(entry) - allowed - {"note"})
        if unknown:
            raise InputFileError(f"{path}: {list_key} entry {i}: unknown keys {unknown}; "
                                 f"known: {sorted(allowed | {'note'})}")
    return config, entries
