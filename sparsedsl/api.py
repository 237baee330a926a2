"""The driver: text → AST → checked tensor IR → passes → backend, and the callable a user gets back.

``load``/``loads`` parse and check a file or a string and return a ``Program``; ``Program.compile(target)``
returns a ``Kernel`` that binds keyword inputs, runs the backend's executable and converts the outputs back to
scipy / numpy / torch (interface.md). Compilations are kept per ``Program`` instance, keyed by target and
options; backends that generate code also cache it on disk (``sparsedsl.runtime.cache``), and so is the
parsed AST of every text that parses (``_parse``), so that a new process running a known program does not
import the parser at all.

Backend contract (one module per target, imported lazily from ``BACKENDS``):

* ``compile(program: nodes.Program, options: dict) -> Executable``; ``Executable.run(bound, sizes)`` returns the
  outputs as runtime containers by name, ``Executable.source`` is the generated text (if any);
* ``EMITS``: what ``sparsedsl compile`` may ask of it besides the AST and the IR — ``"loops"``
  (``Executable.loops``, the loop IR as text), ``"code"`` (``Executable.source``) and ``"artifact"``
  (``Executable.write(folder) -> list of paths``, the stand-alone module or trace of ``compile -o``);
* the ``piuma`` target's executable also serves ``sparsedsl sim``: it takes the options ``config`` (a TOML
  path) and ``set`` (parameter overrides) and writes ``write_report(path)`` (JSON) and ``write_plot(path)``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import pickle
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from sparsedsl.core.errors import (SdslError, SdslInputError, SdslNameError, SdslRuntimeError, SdslTargetError,
                                   SdslTypeError, Source, Span, located)
from sparsedsl.frontend import syntax
from sparsedsl.tensor_ir import nodes

__all__ = [
    "BACKENDS", "TARGETS", "IR", "Program", "Kernel", "Outputs",
    "load", "loads", "program_from_ast", "backend_module", "run_passes",
]

# target name -> module implementing it; imported on first use so that a missing optional dependency
# (triton, say) only matters to the user who asks for that target.
BACKENDS: Mapping[str, str] = MappingProxyType({
    "ref": "sparsedsl.backends.ref",
    "numba": "sparsedsl.backends.numba",
    "triton": "sparsedsl.backends.triton",
    "piuma": "sparsedsl.backends.piuma",
})
TARGETS: tuple[str, ...] = tuple(BACKENDS)


def run_passes(program: nodes.Program, fusion: bool = True, stats=None):
    """The optimization pipeline (``sparsedsl.passes.pipeline``): ``(program', decisions for explain)``;
    ``stats`` (``passes.density.Statistics``) describes the inputs the program will run on."""
    from sparsedsl.passes.pipeline import run_passes as pipeline

    return pipeline(program, fusion, stats)


def backend_module(target: str):
    """The module implementing ``target``; an unknown or unavailable target is an ``SdslTargetError``."""
    if target not in BACKENDS:
        raise SdslTargetError(f"unknown target '{target}' (targets: {', '.join(TARGETS)})")
    modname = BACKENDS[target]
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            raise SdslTargetError(f"target '{target}' is not available in this build") from None
        if exc.name and not exc.name.startswith("sparsedsl"):
            top = exc.name.split(".")[0]
            raise SdslTargetError(
                f"target '{target}' needs the Python package '{top}', which is not installed",
                notes=(f"pip install 'sparsedsl[{target}]'" if target == "triton" else f"pip install {top}",),
            ) from None
        raise
    if not callable(getattr(module, "compile", None)):
        raise SdslTargetError(f"target '{target}' is not available in this build")
    return module


class IR:
    """A checked tensor-IR program; ``str()`` is the textual IR (``sparsedsl compile --emit ir``)."""

    def __init__(self, program: nodes.Program):
        self.program = program

    def __str__(self) -> str:
        from sparsedsl.tensor_ir.printer import format_program

        return format_program(self.program)

    def __repr__(self) -> str:
        return f"<sparsedsl IR {self.program.name!r}: {len(self.program.body)} statements>"

    def __eq__(self, other) -> bool:
        return isinstance(other, IR) and other.program == self.program

    def __hash__(self) -> int:
        return hash(self.program)

    def __getattr__(self, name: str):
        # decls, body, inputs, outputs, decl(...) of the underlying node, for convenience
        if name == "program":
            raise AttributeError(name)
        return getattr(self.program, name)


class Outputs(dict):
    """Outputs by name; ``out["C"]`` and ``out.C`` are the same. An output named like a dict method (``items``,
    ``keys``, ``get``, ``copy``, ...) is read as ``out["items"]``: the attribute stays the method."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no output named {name!r} (outputs: {', '.join(self) or 'none'})") from None

    def __dir__(self):
        return [*super().__dir__(), *self.keys()]


def _any_torch(values) -> bool:
    torch = sys.modules.get("torch")  # a torch tensor can only exist if torch was imported
    if torch is None:
        return False
    tensor = torch.Tensor
    return any(isinstance(v, tensor) for v in values)


class Kernel:
    """A program compiled for one target: call it with the inputs by name (or in declaration order)."""

    def __init__(self, program: "Program", target: str, options: Mapping[str, Any], executable, ir: nodes.Program,
                 compile_seconds: float):
        from sparsedsl.runtime.convert import InputBinder, to_user

        self.program = program
        self.target = target
        self.options = dict(options)
        self.executable = executable
        self.ir = ir
        self.compile_seconds = compile_seconds
        # Worked out once here rather than on every call: a warm call's fixed cost is part of the contract
        # (issue 3: under 200 µs for small inputs), and the IR's inputs/outputs are computed properties.
        self._binder = InputBinder(ir, checks=getattr(executable, "structure_checks", None))
        self._input_decls = ir.inputs
        self._output_names = tuple(d.name for d in ir.outputs)
        self._to_user = to_user

    @property
    def source(self) -> str | None:
        """The backend's generated text (None for a target that generates none)."""
        return getattr(self.executable, "source", None)

    def _named(self, args: tuple, inputs: dict) -> dict:
        if not args:
            return inputs
        decls = self._input_decls
        if len(args) > len(decls):
            raise SdslInputError(
                f"{self.ir.name} takes {len(decls)} input(s) ({', '.join(d.name for d in decls)}), "
                f"{len(args)} were given", decls[-1].span if decls else None)
        named = dict(inputs)
        for decl, value in zip(decls, args):
            if decl.name in named:
                raise SdslInputError(f"input '{decl.name}' given both by position and by name", decl.span)
            named[decl.name] = value
        return named

    def bind(self, *args, **inputs):
        """Validate and convert the inputs: ``(bound containers by name, sizes by name)``."""
        return self._binder(self._named(args, inputs))

    def run_tensors(self, *args, **inputs) -> dict:
        """Run and return the outputs as sparsedsl runtime containers (``Dense``, ``CSR``, ...)."""
        bound, sizes = self._binder(self._named(args, inputs))
        results = self._execute(bound, sizes)
        return {name: results[name] for name in self._output_names}

    def _execute(self, bound, sizes):
        try:
            if self.target == "ref":  # the interpreter walks expressions recursively
                with _deep(self.program.name):
                    return self.executable.run(bound, sizes)
            return self.executable.run(bound, sizes)
        except (MemoryError, SystemError) as exc:
            # Numba reports an allocation that failed inside a parallel kernel as a SystemError caused by it
            cause = exc if isinstance(exc, MemoryError) else exc.__cause__
            if not isinstance(cause, MemoryError):
                raise
            outputs = self.ir.outputs
            dense = " (it holds every tensor dense)" if self.target == "ref" else ""
            raise SdslRuntimeError(
                f"the {self.target} target ran out of memory computing {', '.join(d.name for d in outputs)} "
                f"with sizes {', '.join(f'{k} = {v}' for k, v in sizes.items())}{dense}: {cause}",
                outputs[0].span if outputs else None) from None

    def __call__(self, *args, **inputs) -> Outputs:
        named = self._named(args, inputs) if args else inputs
        torch_like = _any_torch(named.values())
        bound, sizes = self._binder(named)
        results = self._execute(bound, sizes)
        to_user = self._to_user
        return Outputs([(name, to_user(results[name], torch_like)) for name in self._output_names])

    def __repr__(self) -> str:
        return f"<sparsedsl Kernel {self.ir.name!r} target={self.target!r}>"


class Program:
    """A parsed and checked program, or a module of defs (``ir is None``; use ``.function(name)``)."""

    def __init__(self, ir: nodes.Program | None, module: syntax.Module | None = None, loader=None,
                 path: str | None = None, functions: Mapping[str, "Program"] | None = None):
        self._ir = ir
        self.module = module
        self.loader = loader
        self.path = path
        self._functions = dict(functions or {})
        self._kernels: dict[tuple[str, str], Kernel] = {}

    @property
    def is_module(self) -> bool:
        return self._ir is None

    @property
    def name(self) -> str:
        return self._ir.name if self._ir is not None else (self.module.name if self.module else "<module>")

    @property
    def defs(self) -> tuple[str, ...]:
        """Names of the defs written in this file."""
        body = self.module.body if self.module is not None else ()
        return tuple(s.name for s in body if isinstance(s, syntax.FuncDef))

    def _program(self) -> nodes.Program:
        if self._ir is None:
            raise SdslTypeError(
                f"{self.name} is a module of defs ({', '.join(self.defs) or 'none'}), not a program",
                self.module.body[0].span if self.module is not None and self.module.body else None,
                notes=("use .function(name) to run one of its defs, or import it from a program",))
        return self._ir

    @property
    def inputs(self) -> tuple[nodes.Decl, ...]:
        return self._ir.inputs if self._ir is not None else ()

    @property
    def outputs(self) -> tuple[nodes.Decl, ...]:
        return self._ir.outputs if self._ir is not None else ()

    def ir(self, optimized: bool = False) -> IR:
        """The checked tensor IR; with ``optimized``, as the passes leave it for a backend."""
        program = self._program()
        return IR(run_passes(program)[0] if optimized else program)

    def compile(self, target: str = "ref", like: Mapping[str, Any] | None = None, **options) -> Kernel:
        """Compile for ``target`` (``ref``, ``numba``, ``triton``, ``piuma``); repeated calls reuse the result.

        ``like``: example inputs by name (any subset, as a call takes them). Their shapes and stored-entry
        counts guide format selection (an intermediate estimated to be nearly full is stored as a bitmap);
        the kernel still runs on any inputs, only its speed depends on how alike they are."""
        # an error that belongs to no statement (a target this build lacks, an unknown option) is reported at
        # the program's first declaration, so that it too reads FILE:LINE:COL (spec § 10)
        with _deep(self.name), located(self._ir.span if self._ir is not None else None):
            return self._compile(target, like, options)

    def _compile(self, target: str, like, options: dict) -> "Kernel":
        start = time.perf_counter()
        stats = self.input_statistics(like)[0] if like else None
        lowered = layouts = None
        if stats is not None:
            # kernels differ only where the statistics changed a layout: key by the layouts chosen
            lowered = run_passes(self._program(), stats=stats)[0]
            layouts = tuple((d.name, str(d.storage)) for d in lowered.decls)
        key = (target, repr(sorted(options.items())), layouts)
        kernel = self._kernels.get(key)
        if kernel is None:
            program = self._program()
            backend = backend_module(target)
            if lowered is None:
                lowered = run_passes(program)[0]
            if target == "ref":
                # the oracle runs the program as written (the passes above still validated its schedules)
                lowered, _decisions = run_passes(program, fusion=False, stats=stats)
            executable = backend.compile(lowered, dict(options))
            kernel = Kernel(self, target, options, executable, lowered, time.perf_counter() - start)
            self._kernels[key] = kernel
        return kernel

    def input_statistics(self, inputs: Mapping[str, Any]):
        """Bind (and validate) any subset of the inputs: ``(Statistics, sizes they bind)`` — the shapes and
        stored-entry counts that format selection reads (``compile(like=...)``, ``explain(**inputs)``)."""
        from sparsedsl.passes.density import InputStats, Statistics
        from sparsedsl.runtime.convert import bind_value

        program = self._program()
        decls = {d.name: d for d in program.inputs}
        sizes: dict[str, int] = {}
        bound_by: dict[str, str] = {}
        found: dict[str, InputStats] = {}
        for name, value in inputs.items():
            if name not in decls:
                first = next(iter(decls.values()), None)
                raise SdslInputError(f"{self.name} has no input named '{name}' "
                                     f"(inputs: {', '.join(decls) or 'none'})",
                                     first.span if first is not None else program.span)
            with located(decls[name].span):
                tensor = bind_value(value, name, decls[name].type, sizes, bound_by)
            found[name] = InputStats(tuple(int(x) for x in tensor.shape), int(tensor.nnz))
        return Statistics(dict(sizes), found), sizes

    def function(self, name: str) -> "Program":
        """The def ``name`` of this file as a program: its parameters are the inputs, its result the output."""
        found = self._functions.get(name)
        if found is not None:
            return found
        if self.module is None:
            raise SdslNameError(f"'{self.name}' was not built from source text and has no defs")
        from sparsedsl.tensor_ir.check import check_function

        found = Program(check_function(self.module, name, self.loader), self.module, self.loader, self.path)
        self._functions[name] = found
        return found

    def explain(self, **inputs) -> str:
        """Each named value's type and format and why; with inputs, also the sizes they bind."""
        with _deep(self.name):
            return self._explain(inputs)

    def _explain(self, inputs: dict) -> str:
        if self._ir is None:
            lines = [f"module {self.name}"]
            for name in self.defs:
                lines.append(f"def {name}")
                lines.extend(self.function(name).explain().splitlines()[1:])
            return "\n".join(lines)
        lines = [f"program {self.name}"]
        stats = None
        if inputs:
            # Any subset of the inputs may be given: each binds (and validates) the sizes it carries, and
            # their statistics drive format selection as they would for `compile(like=...)`.
            stats, sizes = self.input_statistics(inputs)
            if sizes:
                lines.append("sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()))
        lowered, decisions = run_passes(self._ir, stats=stats)
        reasons = {d.subject: d.reason for d in decisions if d.kind == "format"}
        fused = {d.subject: d for d in decisions if d.kind == "fusion"}
        kept = {d.name: d for d in lowered.decls}
        rows = []
        for d in self._ir.decls:
            if d.name in fused:
                # computed inside its reader by the fusion pass: listed, with where it went
                rows.append((d.name, d.kind, f"{d.type} {fused[d.name].choice}", fused[d.name].reason))
                continue
            d = kept.get(d.name, d)
            storage = getattr(d, "storage", None)
            shown = str(d.type) if storage is None else f"{d.type} stored as {storage}"
            rows.append((d.name, d.kind, shown, reasons.get(d.name) or _default_reason(d)))
        widths = [max((len(r[k]) for r in rows), default=0) for k in range(3)]
        for name, kind, shown, reason in rows:
            lines.append(f"  {name:<{widths[0]}}  {kind:<{widths[1]}}  {shown:<{widths[2]}}  {reason}")
        for decision in decisions:
            if decision.kind not in ("format", "fusion"):
                lines.append(f"  {decision}")
        # The CPU backend's own choices (row accumulators and why). They depend only on the program, so they
        # are shown without compiling; a program the backend refuses simply has none to show.
        try:
            backend_decisions = backend_module("numba").decisions(lowered, {})
        except SdslError:
            backend_decisions = []
        for decision in backend_decisions:
            lines.append(f"  numba: {decision}")
        for sched in lowered.schedules:
            for directive in sched.directives:
                lines.append(f"  schedule {sched.target}: {directive.text}  (requested by the program)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if self._ir is None:
            return f"<sparsedsl module {self.name!r}: defs {list(self.defs)}>"
        return f"<sparsedsl Program {self.name!r}: inputs {[d.name for d in self.inputs]}, " \
               f"outputs {[d.name for d in self.outputs]}>"


def _default_reason(decl: nodes.Decl) -> str:
    if decl.kind == "const":
        return "compile-time constant"
    if decl.kind != "input" and decl.type.is_scalar:
        return "scalar"
    return "declared"


def _loader_for(folder: Path | None):
    from sparsedsl.tensor_ir.loader import ModuleLoader

    return ModuleLoader([folder] if folder is not None else [])


def _is_module(module: syntax.Module) -> bool:
    """Only defs and imports (spec § 7): a module, whose defs are called or run one at a time."""
    return bool(module.body) and all(
        isinstance(s, (syntax.FuncDef, syntax.Import, syntax.FromImport)) for s in module.body)


def _build(module: syntax.Module, loader, path: str | None) -> Program:
    from sparsedsl.tensor_ir.check import check_function, check_module

    if not _is_module(module):
        return Program(check_module(module, loader), module, loader, path)
    # Every def is checked now, so that `sparsedsl check` and `sd.load` report a broken def at once.
    functions = {s.name: Program(check_function(module, s.name, loader), module, loader, path)
                 for s in module.body if isinstance(s, syntax.FuncDef)}
    return Program(None, module, loader, path, functions)


# What a parse depends on besides the text and its name: the grammar, the front end, the AST classes and the
# spans they carry (core). Lark's own entry file carries its version.
_PARSE_PACKAGES = ("sparsedsl.frontend", "sparsedsl.core", "sparsedsl.grammar")


def _parse_key(text: str, name: str) -> str:
    from sparsedsl.runtime.cache import cache_key, source_fingerprint

    lark = importlib.util.find_spec("lark")
    lark_entry = Path(lark.origin).read_text(encoding="utf-8") if lark is not None and lark.origin else ""
    version = "%s-%d.%d" % (source_fingerprint(_PARSE_PACKAGES), *sys.version_info[:2])
    return cache_key(text, {"name": name, "lark": hashlib.sha256(lark_entry.encode("utf-8")).hexdigest()},
                     "ast", version)


def _parse(text: str, name: str) -> syntax.Module:
    """``frontend.parser.parse`` through the disk cache: a file parsed before (same text, name and front-end
    code) is unpickled instead, without importing Lark or loading its tables — about a tenth of a second of
    every new process that runs a program. Text that does not parse is never stored, so its diagnostics
    always come from the parser; an unreadable or unwritable cache only costs the parse."""
    from sparsedsl.runtime.cache import DiskCache

    cache = DiskCache()
    key = _parse_key(text, name)
    try:
        data = cache.get(key, ".ast")
    except OSError:
        data = None
    if data is not None:
        try:
            stored_key, module = pickle.loads(data)
        except Exception:  # a damaged entry (it was written atomically, but disks fail): parse again
            stored_key = module = None
        # the entry names its key: a file copied or renamed within the cache is not taken for another text
        if stored_key == key and isinstance(module, syntax.Module):
            return module
    from sparsedsl.frontend.parser import parse

    module = parse(text, name)
    try:
        cache.put(key, pickle.dumps((key, module), protocol=pickle.HIGHEST_PROTOCOL), ".ast")
    except OSError:
        pass
    return module


class _DeepStack:
    """A long chain of operators (``a + a + ... + a``, hundreds of terms) is a tree that deep, and the front
    end, the checker and the reference interpreter walk trees recursively: while any thread is inside
    ``with _deep(...)`` the Python stack limit is at least 4000 frames (well inside the C stack), and a
    program deeper still is the user's error, not a crash. The limit is the interpreter's, shared by every
    thread: the first thread in raises it and the last one out puts it back."""

    LIMIT = 4000

    def __init__(self):
        self.lock = threading.Lock()
        self.inside = 0
        self.saved = 0

    @contextlib.contextmanager
    def __call__(self, what: str):
        with self.lock:
            if self.inside == 0:
                self.saved = sys.getrecursionlimit()
                sys.setrecursionlimit(max(self.saved, self.LIMIT))
            self.inside += 1
        try:
            yield
        except RecursionError:
            raise SdslError(f"{what}: an expression nests too deeply (a chain of several hundred operators "
                            "or more); compute parts of it in statements of their own") from None
        finally:
            with self.lock:
                self.inside -= 1
                if self.inside == 0:
                    sys.setrecursionlimit(self.saved)


_deep = _DeepStack()


def loads(text: str, name: str = "inline") -> Program:
    """Parse and check program text; ``name`` is what diagnostics call it. Imports resolve from the current
    folder, then ``SDSL_PATH``, then the standard library."""
    with _deep(name):
        module = _parse(text, name)
        return _build(module, _loader_for(Path.cwd()), None)


def _resolve(path: Path) -> Path:
    # `sd.load("stdlib/gnn.sdsl")` (interface.md) must also work where the source tree is absent: a path that
    # does not exist and starts with stdlib/ falls back to the installed standard library.
    if path.exists() or not path.parts or path.parts[0] != "stdlib":
        return path
    candidate = resources.files("sparsedsl.stdlib").joinpath(*path.parts[1:])
    return Path(str(candidate)) if candidate.is_file() else path


def _byte_span(shown: str, exc: UnicodeDecodeError) -> Span:
    """The line and column of the byte a decoder stopped at (the line shown with replacement characters)."""
    data = exc.object[:exc.start]
    line = data.count(b"\n") + 1
    col = len(data[data.rfind(b"\n") + 1:].decode("utf-8", errors="replace")) + 1
    return Span(Source(shown, exc.object.decode("utf-8", errors="replace")), line, col)


def load(path: str | Path) -> Program:
    """Read, parse and check a ``.sdsl`` file. Imports resolve from its folder, ``SDSL_PATH``, the stdlib."""
    shown = str(path)
    real = _resolve(Path(path))
    # a file that cannot be read is reported at its own start (spec § 10's FILE:LINE:COL), with no text to show
    at = Span(Source(shown, ""), 1, 1)
    try:
        text = real.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SdslError(f"cannot read '{shown}': no such file", at) from None
    except IsADirectoryError:
        raise SdslError(f"cannot read '{shown}': it is a directory", at) from None
    except UnicodeDecodeError as exc:
        raise SdslError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", _byte_span(shown, exc)) from None
    except OSError as exc:
        raise SdslError(f"cannot read '{shown}': {exc.strerror or exc}", at) from None
    with _deep(shown):
        module = _parse(text, shown)
        return _build(module, _loader_for(real.resolve().parent), shown)


def program_from_ast(module: syntax.Module, name: str, loader=None) -> Program:
    """A ``Program`` from an AST built by another front end (``@sd.kernel``); ``name`` names the program."""
    if module.name != name:
        module = dataclasses.replace(module, name=name)
    if loader is None:
        loader = _loader_for(Path.cwd())
    return _build(module, loader, None)
