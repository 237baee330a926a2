"""Finding and parsing imported modules (spec § 7).

``import gnn`` looks for ``gnn.sdsl`` in the importing file's folder, then in each folder of ``SDSL_PATH``, then
in the standard library (package data of ``sparsedsl.stdlib``). A dotted name ``a.b`` is the file ``a/b.sdsl``.
Parsed modules are cached per loader, so one compilation parses each file once.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from sparsedsl.core.errors import SdslImportError, Span
from sparsedsl.frontend import syntax


class ModuleLoader:
    def __init__(self, search_paths=None, use_env: bool = True, use_stdlib: bool = True):
        paths = [Path(p) for p in (search_paths or [])]
        if use_env:
            paths += [Path(p) for p in os.environ.get("SDSL_PATH", "").split(os.pathsep) if p]
        self.search_paths = paths
        self.use_stdlib = use_stdlib
        self._cache: dict[str, syntax.Module] = {}

    def candidates(self, module: str, from_dir: Path | None):
        rel = Path(*module.split(".")).with_suffix(".sdsl")
        dirs = ([from_dir] if from_dir is not None else []) + self.search_paths
        for d in dirs:
            yield d / rel
        if self.use_stdlib:
            root = resources.files("sparsedsl.stdlib")
            yield root.joinpath(*rel.parts)

    def load(self, module: str, from_dir: Path | None, span: Span | None) -> tuple[str, syntax.Module]:
        """Return (path, parsed module); raise SdslImportError at ``span`` when no file is found."""
        from sparsedsl.frontend.parser import parse

        tried = []
        for cand in self.candidates(module, from_dir):
            tried.append(str(cand))
            try:
                if not cand.is_file():
                    continue
                key = str(cand)
                if key not in self._cache:
                    text = cand.read_text(encoding="utf-8")
                    self._cache[key] = parse(text, key)
                return key, self._cache[key]
            except (OSError, UnicodeDecodeError) as exc:
                raise SdslImportError(f"cannot read module '{module}' from {cand}: {exc}", span) from None
        raise SdslImportError(
            f"no module named '{module}'",
            span,
            notes=(f"looked for {Path(*module.split('.')).with_suffix('.sdsl')} in: the importing file's folder, "
                   "SDSL_PATH, and the standard library",),
        )
