"""On-disk cache of compiled artifacts (generated source, compiled modules, traces).

An entry is keyed by the sha256 of the textual IR, the compile options and the backend's name and version, so
a change to any of them is a miss, never a stale hit. Entries are written atomically: the bytes go to a
temporary file in the cache's own folder and ``os.replace`` moves it into place, so two processes compiling the
same program at once both succeed and a reader sees either no file or a whole one, never a partial write.

The folder is ``$SDSL_CACHE_DIR`` if set, else ``~/.cache/sparsedsl``.

An artifact keyed by something other than its own text (the parsed AST of a file, the generated module of a
tensor-IR program) must also be keyed by the code that produced it: ``source_fingerprint`` hashes the source
files of the packages involved, so that editing the compiler makes those entries misses, as a new version would.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

_SOURCE_SUFFIXES = (".py", ".lark")


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


@functools.cache
def source_fingerprint(packages: tuple[str, ...]) -> str:
    """The hex sha256 of the ``.py`` and ``.lark`` files (relative paths and contents) of ``packages`` and all
    their sub-packages. Computed once per process: the code that is running is the code imported at its
    start, and reading it all (about 40 files) costs a few milliseconds."""
    digest = hashlib.sha256()
    for package in packages:
        digest.update(package.encode("utf-8") + b"\0")
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or ()) if spec is not None else ():
            for folder, subfolders, files in os.walk(root):
                subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
                for name in sorted(files):
                    if name.endswith(_SOURCE_SUFFIXES):
                        path = os.path.join(folder, name)
                        with open(path, "rb") as fh:
                            data = fh.read()
                        digest.update(os.path.relpath(path, root).encode("utf-8") + b"\0")
                        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


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
