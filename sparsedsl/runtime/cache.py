"""On-disk cache of compiled artifacts (generated source, compiled modules, traces).

An entry is keyed by the sha256 of the textual IR, the compile options and the backend's name and version, so
a change to any of them is a miss, never a stale hit. Entries are written atomically: the bytes go to a
temporary file in the cache's own folder and ``os.replace`` moves it into place, so two processes compiling the
same program at once both succeed and a reader sees either no file or a whole one, never a partial write.

The folder is ``$SDSL_CACHE_DIR`` if set, else ``~/.cache/sparsedsl``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping


def default_cache_dir() -> Path:
    """The cache folder named by the environment (read on every call: no module-level state)."""
    env = os.environ.get("SDSL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sparsedsl"


def _canonical(value: Any) -> Any:
    """Options as a JSON-stable structure: dict keys sorted, tuples as lists, other objects by ``repr``."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def cache_key(ir_text: str, options: Mapping[str, Any] | None, backend: str, version: str) -> str:
    """The hex sha256 identifying one compilation: IR text, options, backend name and backend version."""
    payload = json.dumps(
        {"ir": ir_text, "options": _canonical(dict(options or {})), "backend": backend, "version": version},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class DiskCache:
    """A folder of cache entries, one file per (key, suffix).

    Keys are hex digests (``cache_key``); the first two characters name a sub-folder so that no folder grows
    to hundreds of thousands of entries.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str, suffix: str = "") -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"internal error: cache key {key!r} is not a hex digest")
        if "/" in suffix or "\\" in suffix or suffix.startswith(".."):
            raise ValueError(f"internal error: cache suffix {suffix!r} is not a plain file suffix")
        return self.root / key[:2] / (key + suffix)

    def get(self, key: str, suffix: str = "") -> bytes | None:
        """The entry's bytes, or None on a miss."""
        try:
            return self.path(key, suffix).read_bytes()
        except FileNotFoundError:
            return None

    def get_text(self, key: str, suffix: str = "") -> str | None:
        data = self.get(key, suffix)
        return None if data is None else data.decode("utf-8")

    def put(self, key: str, data: bytes | str, suffix: str = "") -> Path:
        """Store an entry atomically and return its path; concurrent writers of one key each win whole."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        final = self.path(key, suffix)
        final.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file lives in the destination folder: os.replace is only atomic within one file system.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            # mkstemp creates the file private (0600); cached code is meant to be shared like any installed module
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return final
