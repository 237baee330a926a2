"""The Numba CPU backend: tensor IR → loop IR (``sparsedsl.loop_ir.lower``) → Python source → ``numba.njit``.

``compile(program, options)`` lowers, verifies and renders the program, writes the source into the on-disk
cache (keyed by the source's hash, the options and this backend's version; written atomically, never
rewritten, so that Numba's own ``cache=True`` files stay valid) and imports it. A compile index in the same
folder maps the program (its full IR, the options, and a hash of sparsedsl's source files) to that module, so
that a later process imports it straight away: no lowering, no code generator, about a tenth of a second of a
new process's first call. ``Executable.run(bound,
sizes)`` unpacks the bound containers into raw arrays (inputs of other sparse formats are converted to CSR,
rank-1 sparse inputs to values plus a presence array), calls the generated ``run`` and packs the results
into containers of the declared formats.

Options: ``accumulator`` (dense | hash | sort | auto) overrides every ``accumulator`` schedule directive;
``parallel`` (default True) distributes the outermost row loop over threads with ``prange`` — False gives
serial kernels, which Numba compiles two to three times faster; ``reassoc`` (default True) lets
float reductions use vector lanes (LLVM's ``reassoc`` flag only; False keeps every sum in source order);
``jam`` (default True) runs a compressed walk around a dense loop several entries per step
(``sparsedsl.loop_ir.jam``; False: one entry per step, for comparison); ``assembly`` (``auto`` or
``two-pass``) — ``auto`` assembles a sparse result whose rows come out of a workspace (SpGEMM) in one numeric
pass into scratch (``Lowerer.one_pass``) unless the scratch would exceed ``one_pass_max_entries`` entries
(default 2^25: larger scratch is not kept between calls, so its page faults and copy cost more than a symbolic
pass), ``two-pass`` always runs a symbolic pass first; ``blocks`` (default True) walks the rows of bsr,
blockdiag and nm inputs in their blocks (``Lowerer.block_walk``; False: compressed rows made at the call);
``cache_dir`` chooses the cache folder (default ``$SDSL_CACHE_DIR`` or ``~/.cache/sparsedsl``).

Threading layer: the backend leaves Numba's choice (OpenMP where available) and sets no process-wide knob
(``numba.config.THREADING_LAYER``, ``OMP_WAIT_POLICY``), since either would also change every other
parallel Numba function of the user's process. Measured on the 2-core benchmark machine (empty ``prange``
kernel, median of 3000 warm calls): OpenMP 3 µs per launch, 11 µs with ``OMP_WAIT_POLICY=PASSIVE``,
the ``workqueue`` layer 88 µs (TBB is not installed there). A launch is thus negligible next to the kernels
(a warm small call is about 90 µs in all, mostly binding and dispatch), and switching layers would only
make it worse.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sparsedsl.core.errors import SdslInputError, SdslTargetError, located
from sparsedsl.tensor_ir import nodes as T
from sparsedsl.tensor_ir.types import NUMPY_DTYPE

if TYPE_CHECKING:
    from sparsedsl.loop_ir import nodes as L

VERSION = "0.2.0"
# the array dtype kernels see: Numba has no CPU float16, so f16 values travel as float32 (exactly)
KERNEL_DTYPE = dict(NUMPY_DTYPE, f16=np.dtype(np.float32))
EMITS = ("loops", "code", "artifact")
_LOWERING_OPTIONS = ("accumulator", "parallel", "assembly", "one_pass_max_entries", "blocks", "lookup")
# every keyword compile() takes for this target: a misspelt one is an error, not silently ignored
OPTIONS = _LOWERING_OPTIONS + ("cache_dir", "reassoc", "jam")
# The code whose change must invalidate a program's entry in the compile index: all of sparsedsl (the IR
# classes, lowering, dtype tables, ...) and this backend, wherever an editable install keeps it.
_CODE_PACKAGES = ("sparsedsl", "sparsedsl.backends.numba")
_INDEX_SUFFIX = ".numba.json"


class _Param(NamedTuple):
    """What ``run`` needs of a loop-IR ``Param``: which array of which tensor goes in this position."""

    kind: str
    role: str
    tensor: str


class _Result(NamedTuple):
    """What ``run`` needs of a loop-IR ``Result``."""

    tensor: str
    kind: str
    dtype: str


def _lowering_options(options: dict | None) -> dict:
    return {k: v for k, v in (options or {}).items() if k in _LOWERING_OPTIONS}


def lower(program: T.Program, options: dict | None = None) -> L.Module:
    """The verified loop IR of ``program`` (``SdslTargetError`` for a statement this target cannot compute)."""
    from sparsedsl.loop_ir.lower import lower_program
    from sparsedsl.loop_ir.verify import verify_module

    module = lower_program(program, _lowering_options(options))
    if (options or {}).get("jam", True):
        module = _jam(module, program)[0]
    verify_module(module)
    return module


def _jam(module: L.Module, program: T.Program) -> tuple[L.Module, list]:
    """Unroll-and-jam of the compressed walks around dense loops (``sparsedsl.loop_ir.jam``)."""
    from sparsedsl.loop_ir.jam import jam_module

    return jam_module(module, {s.span: s.target for s in T.walk_assigns(program.body)})


def decisions(program: T.Program, options: dict | None = None) -> list:
    """What lowering for this target chose and why (``sparsedsl.passes.formats.Decision``): the accumulator
    of every row-wise reduction (dense / hash / sort / auto, from a schedule directive, the ``accumulator``
    option, or per row by its work) and the temporaries it introduced. ``[]`` when nothing was chosen."""
    from sparsedsl.loop_ir.lower import lower_with_notes
    from sparsedsl.passes.formats import Decision

    module, notes = lower_with_notes(program, _lowering_options(options))
    if (options or {}).get("jam", True):
        notes = notes + _jam(module, program)[1]
    out: list = []
    for subject, kind, choice, reason, span in notes:
        made = Decision(subject, kind, choice, reason, span)
        # the symbolic and numeric phases of one statement make the same choice: report it once
        if made not in out:
            out.append(made)
    return out


def render(program: T.Program, options: dict | None = None) -> str:
    """The generated Python source (deterministic: the same program and options give the same text)."""
    from .codegen import render_module

    return render_module(lower(program, options), header=f"generated by sparsedsl {VERSION} (numba target)",
                         reassoc=bool((options or {}).get("reassoc", True)))


def compile(program: T.Program, options: dict | None = None) -> "Executable":  # noqa: A001 - backend contract
    """The program's executable. A program compiled before with the same options (by any process, with the
    same sparsedsl code) is found in the compile index and its generated module imported directly, without
    lowering or rendering again: a new process then never imports the loop IR or the code generator."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SdslTargetError(f"unknown option{'s' if len(unknown) > 1 else ''} of target 'numba': "
                              f"{', '.join(map(str, unknown))} (options: {', '.join(OPTIONS)})")
    cache_dir = options.get("cache_dir")
    index_key = _index_key(program, options)
    found = _from_index(program, options, index_key)
    if found is not None:
        return found
    from .codegen import render_module

    module = lower(program, options)
    source = render_module(module, header=f"generated by sparsedsl {VERSION} (numba target)",
                           reassoc=bool(options.get("reassoc", True)))
    executable = Executable(program, module, source, cache_dir, options)
    _add_to_index(executable, index_key, cache_dir)
    return executable


def _index_key(program: T.Program, options: dict) -> str:
    """The compile index's key: the program's full structure (``repr`` shows every field that compares equal,
    leaving out only source positions, which no generated line depends on), the options but the cache
    folder, and the code that lowers and renders."""
    from sparsedsl.runtime.cache import cache_key, source_fingerprint

    keyed = {k: v for k, v in options.items() if k != "cache_dir"}
    return cache_key(repr(program), keyed, "numba-program", f"{VERSION}-{source_fingerprint(_CODE_PACKAGES)}")


def _from_index(program: T.Program, options: dict, index_key: str) -> "Executable | None":
    """The executable from the compile index, or None on a miss (or an entry that does not check out)."""
    from sparsedsl.runtime.cache import DiskCache, cache_key

    cache = DiskCache(options.get("cache_dir"))
    try:
        entry = json.loads(cache.get_text(index_key, _INDEX_SUFFIX) or "null")
        if entry is None or entry["key"] != index_key:  # absent, or another program's entry
            return None
        source_key = entry["source"]
        source = cache.get_text(source_key, ".py")
        layout = (tuple(_Param(*p) for p in entry["params"]), tuple(_Result(*r) for r in entry["results"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    # the module's name is the hash of its text: a text that does not hash to it is not the module indexed
    if source is None or cache_key(source, {}, "numba", VERSION) != source_key:
        return None
    return Executable(program, None, source, options.get("cache_dir"), options, layout)


def _add_to_index(executable: "Executable", index_key: str, cache_dir) -> None:
    from sparsedsl.runtime.cache import DiskCache, cache_key

    entry = {"key": index_key, "source": cache_key(executable.source, {}, "numba", VERSION),
             "params": [list(p) for p in executable._params], "results": [list(r) for r in executable._results]}
    try:
        DiskCache(cache_dir).put(index_key, json.dumps(entry, sort_keys=True), _INDEX_SUFFIX)
    except OSError:
        pass  # the index only saves time; a read-only cache folder still compiles


def _load_source(source: str, options: dict, cache_dir) -> object:
    """Import the generated module from the disk cache (written once per source text)."""
    from sparsedsl.runtime.cache import DiskCache, cache_key

    cache = DiskCache(cache_dir)
    key = cache_key(source, options, "numba", VERSION)
    path = cache.path(key, ".py")
    if cache.get(key, ".py") != source.encode("utf-8"):
        path = cache.put(key, source, ".py")
    name = f"sparsedsl_numba_{key[:32]}"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    pymod = importlib.util.module_from_spec(spec)
    # Numba's cache finds the generated module's helper functions again by module name
    sys.modules[name] = pymod
    spec.loader.exec_module(pymod)
    return pymod


def _index_array(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.int32 or a.dtype == np.int64:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a, dtype=np.int64)


_BLOCK_ROLES = ("bptr", "bidx", "bval", "boff")


def _block_array(decl: T.Decl, value, role: str) -> np.ndarray:
    """One array of a bsr/blockdiag/nm/csc input's own layout (``loop_ir.lower.Storage``): bsr's block row
    pointer and block columns, csc's column pointer and row indices, the values of every format flattened in C
    order, nm's slot offsets (flattened, as stored)."""
    if role == "bptr":
        return _index_array(value.indptr)
    if role == "bidx":
        return _index_array(value.indices)
    if role == "boff":
        return np.ascontiguousarray(value.offsets).reshape(-1)
    values = getattr(value, value.value_attr)
    return np.ascontiguousarray(values, dtype=KERNEL_DTYPE[decl.type.dtype]).reshape(-1)


class Executable:
    """A compiled program: ``run(bound, sizes)`` → outputs by name as runtime containers."""

    def __init__(self, program: T.Program, module: "L.Module | None", source: str, cache_dir=None,
                 options: dict | None = None, layout: tuple | None = None):
        """``module`` may be None when ``layout`` (the params and results ``run`` needs) is given: the loop IR
        is then lowered again only if asked for (``module``, ``loops``)."""
        self.program = program
        self._module = module
        self._options = dict(options or {})
        self.source = source
        if layout is None:
            layout = (tuple(_Param(p.kind, p.role, p.tensor) for p in module.params),
                      tuple(_Result(r.tensor, r.kind, r.dtype) for r in module.results))
        self._params, self._results = layout
        self._pymod = _load_source(source, {}, cache_dir)
        self._decls = {d.name: d for d in program.decls}
        from sparsedsl.backends.numba.validate import canonical_csr, canonical_nm

        # the binder's structure checks, compiled (see validate.py): the kernel's caller binds with them
        self.structure_checks = {"csr": canonical_csr, "nm": canonical_nm}

    @property
    def module(self) -> "L.Module":
        """The loop IR this executable was generated from."""
        if self._module is None:
            self._module = lower(self.program, self._options)
        return self._module

    @property
    def loops(self) -> str:
        from sparsedsl.loop_ir.printer import format_module

        return format_module(self.module)

    def write(self, folder) -> list[Path]:
        """The stand-alone module (imports only numpy and numba) as ``<folder>/kernel_numba.py``; its
        ``run(...)`` takes the raw arrays listed by ``module.params`` and returns the raw results."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "kernel_numba.py"
        path.write_text(self.source, encoding="utf-8")
        return [path]

    # ------------------------------------------------------------ run

    def run(self, bound: dict, sizes: dict) -> dict:
        from sparsedsl.runtime.tensors import CSR, Dense

        args = []
        cache: dict[str, tuple] = {}
        for p in self._params:
            if p.kind == "size":
                if p.tensor not in sizes:
                    raise SdslInputError(f"size {p.tensor} is not bound by any input")
                args.append(np.int64(sizes[p.tensor]))
                continue
            decl = self._decls[p.tensor]
            if p.role in _BLOCK_ROLES:
                # an input read in its own layout (block walks, csc columns): its arrays as they are
                args.append(_block_array(decl, bound[p.tensor], p.role))
                continue
            if p.tensor not in cache:
                cache[p.tensor] = self._unpack(decl, p.kind, bound.get(p.tensor), CSR, Dense)
            arrays = cache[p.tensor]
            args.append(arrays[{"ptr": 0, "idx": 1, "val": 2}[p.role] if p.kind == "csr"
                               else {"val": 0, "mask": 1, "scalar": 0}[p.role]])
        raw = self._pymod.run(*args)
        return {r.tensor: self._pack(r, raw[r.tensor], sizes) for r in self._results}

    def _unpack(self, decl: T.Decl, kind: str, value, CSR, Dense) -> tuple:
        dtype = KERNEL_DTYPE[decl.type.dtype]
        if value is None:
            if decl.default is None:
                raise SdslInputError(f"missing input '{decl.name}'", decl.span)
            return (dtype.type(decl.default.value),)
        if kind == "scalar":
            if isinstance(value, Dense):
                return (dtype.type(value.values.reshape(()).item()),)
            return (dtype.type(value),)
        if kind == "dense":
            values = value.values if isinstance(value, Dense) else value.to_presence()[0]
            return (np.ascontiguousarray(values, dtype=dtype),)
        if kind == "bitmap":
            values, present = value.to_presence()
            return (np.ascontiguousarray(values, dtype=dtype), np.ascontiguousarray(present, dtype=np.bool_))
        # bound inputs are canonical already (the binder checked or built them): not checked twice per call
        if value.format.name in ("bsr", "csc"):
            from .layouts import bsr_to_csr, csc_to_csr

            ptr, idx, data = (bsr_to_csr if value.format.name == "bsr" else csc_to_csr)(value)
            return _index_array(ptr), _index_array(idx), np.ascontiguousarray(data, dtype=dtype)
        # a csr is taken as it is (to_csr would check its order again: 50-100 µs of a small call)
        csr = value if value.format.name == "csr" else value.to_csr()
        # int32 and int64 indices go in as they are (scipy's default is int32): converting them would cost more
        # than the kernel on a small matrix; Numba compiles (and caches) one specialization per index dtype
        return (_index_array(csr.indptr), _index_array(csr.indices), np.ascontiguousarray(csr.data, dtype=dtype))

    def _pack(self, r: L.Result, arrays: tuple, sizes: dict):
        with located(self._decls[r.tensor].span):
            return self._container(r, arrays, sizes)

    def _container(self, r: L.Result, arrays: tuple, sizes: dict):
        from sparsedsl.runtime.tensors import CSR, Dense, FORMAT_CLASSES, from_presence, resolve_params

        decl = self._decls[r.tensor]
        ttype = decl.type
        dtype = NUMPY_DTYPE[r.dtype]
        if dtype != KERNEL_DTYPE[r.dtype]:
            # the values array (first of val/mask, last of ptr/idx/val) is already on the dtype's grid: exact
            at = len(arrays) - 1 if r.kind == "csr" else 0
            arrays = tuple(np.asarray(a).astype(dtype) if i == at else a for i, a in enumerate(arrays))
        if r.kind == "scalar":
            return Dense(np.asarray(arrays[0], dtype=dtype), r.dtype)
        if r.kind == "dense":
            return Dense(arrays[0], r.dtype)
        shape = tuple(int(sizes[d]) if isinstance(d, str) else int(d) for d in ttype.shape)
        if r.kind == "bitmap":
            fill = decl.fill.value if decl.fill is not None else 0
            return from_presence(arrays[0], arrays[1], ttype, sizes, f"output {r.tensor}", fill)
        ptr, idx, val = arrays
        csr = CSR(ptr, idx, val, shape, r.dtype)
        fmt = ttype.format
        if fmt.name in ("csr", "auto"):
            return csr
        return FORMAT_CLASSES[fmt.name].from_coo(csr.to_coo(), resolve_params(fmt, sizes, f"output {r.tensor}"),
                                                 f"output {r.tensor}")
