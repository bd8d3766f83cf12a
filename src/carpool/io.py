"""Atomic file writing (a temporary file in the target folder, then a rename) and the
user's cache directories."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_figure", "cache_directory"]

_OFF = {"0", "off", "false", "no", "none"}


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; the old file survives a failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    fmt = Path(path).suffix.lstrip(".")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=150))


def cache_directory(env: str, name: str) -> Path | None:
    """The cache directory an environment variable names (``None`` where it says ``off``,
    ``0``, ``false``, ``no`` or ``none``), else ``$XDG_CACHE_HOME/carpool/<name>``
    (default ``~/.cache/carpool/<name>``)."""
    setting = os.environ.get(env, "").strip()
    if setting.lower() in _OFF:
        return None
    if setting:
        return Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join("~", ".cache")
    return Path(base).expanduser() / "carpool" / name
