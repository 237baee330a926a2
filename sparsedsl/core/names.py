"""Deterministic fresh names (no global counters: each ``NameSupply`` is owned by one compilation)."""
from __future__ import annotations

import keyword
import re

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class NameSupply:
    """Hands out names that do not collide with a set of taken names; same inputs, same names."""

    def __init__(self, taken=()):
        self.taken = set(taken)

    def reserve(self, name: str) -> None:
        self.taken.add(name)

    def fresh(self, hint: str) -> str:
        base = hint if IDENT.match(hint) else "t"
        if base not in self.taken:
            self.taken.add(base)
            return base
        n = 1
        while f"{base}_{n}" in self.taken:
            n += 1
        name = f"{base}_{n}"
        self.taken.add(name)
        return name


def mangle(name: str, prefix: str = "v_") -> str:
    """A Python identifier for a validated sparsedsl name; never a keyword or a builtin we rely on."""
    if not IDENT.match(name):
        raise ValueError(f"internal error: {name!r} is not a valid identifier")
    out = prefix + name
    assert not keyword.iskeyword(out)
    return out
