"""The checker: AST → typed, inlined tensor IR, with a diagnostic for every user mistake.

It resolves names (tensors, scalars, sizes, consts, defs, modules; any other name inside ``[...]`` or an
expression is an index variable), infers the range of every index variable from the accesses that use it,
types every expression (spec § 6 promotion, with literals and consts adopting the other operand's dtype),
checks formats and shapes, enforces single assignment, rewrites whole-tensor sugar (``@``, ``.T``,
element-wise whole-tensor expressions) into index notation, inlines defs and imports, turns ``where``
conditions into explicit masks and validates schedule directives.

Errors are ``SdslError`` subclasses carrying the span of the offending text; the first one found is raised.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from sparsedsl.core.errors import (
    SdslError, SdslImportError, SdslNameError, SdslScheduleError, SdslTypeError, Span,
)
from sparsedsl.core.names import NameSupply
from sparsedsl.frontend import syntax as S
from sparsedsl.tensor_ir import nodes as N
from sparsedsl.tensor_ir.presence import is_full
from sparsedsl.tensor_ir.types import (
    AUTO, DENSE, FORMAT_NPARAMS, FORMAT_RANKS, FLOAT_DTYPES, INT_DTYPES, Dim, Format, TensorType, promote,
)

FLOAT_FUNCS = ("exp", "log", "log1p", "sqrt", "rsqrt", "sigmoid", "tanh", "gelu", "silu", "sin", "cos")
KEEP_FUNCS = ("abs", "sign", "relu", "floor", "ceil")
CONSTANT_NAMES = {"inf": math.inf, "nan": math.nan}
SCHEDULE_DIRECTIVES = ("accumulator", "parallel", "block", "order", "format", "fuse")
ACCUMULATORS = ("dense", "hash", "sort", "auto")


# ---------------------------------------------------------------- symbols and scopes

@dataclass
class Symbol:
    """What a name means where it is used. ``ir_name`` is its name in the IR (defs' locals are renamed)."""

    name: str
    kind: str  # input output const temp size def module
    span: Span | None
    ir_name: str = ""
    type: TensorType | None = None
    assigned: bool = False
    assign_span: Span | None = None
    full: bool = False  # statically present everywhere
    const: N.Lit | None = None
    const_weak: bool = True  # an untyped literal adopts the other operand's dtype; a cast (i64(3)) keeps its own
    dim: Dim | None = None  # for sizes: the caller's size name or literal it stands for
    func: "FuncInfo | None" = None
    module: "ModuleEnv | None" = None
    fill: N.Lit | None = None


@dataclass
class FuncInfo:
    node: S.FuncDef
    env: "ModuleEnv"


@dataclass
class ModuleEnv:
    """The top-level namespace of a module: its defs and imported modules/defs."""

    name: str
    path: str | None
    symbols: dict[str, Symbol] = field(default_factory=dict)


class Scope:
    def __init__(self, parent: "Scope | None" = None, module: ModuleEnv | None = None):
        self.parent = parent
        self.module = module
        self.symbols: dict[str, Symbol] = {}

    def lookup(self, name: str) -> Symbol | None:
        s: Scope | None = self
        while s is not None:
            if name in s.symbols:
                return s.symbols[name]
            s = s.parent
        if self.module is not None:
            return self.module.symbols.get(name)
        return None

    def all_names(self):
        s: Scope | None = self
        out = set()
        while s is not None:
            out |= set(s.symbols)
            if s.module is not None:
                out |= set(s.module.symbols)
            s = s.parent
        return out

    def define(self, sym: Symbol) -> Symbol:
        self.symbols[sym.name] = sym
        return sym


def _err(cls, msg, span, *notes):
    return cls(msg, span, notes=tuple(n for n in notes if n))


def _a(word: str) -> str:
    """``word`` with its indefinite article: an input, a temp."""
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


# ---------------------------------------------------------------- per-statement context

@dataclass
class StmtCtx:
    """Index variables of one statement: their ranges and where the range came from."""

    ranges: dict[str, tuple[Dim, str, Span | None]] = field(default_factory=dict)
    uses: dict[str, Span | None] = field(default_factory=dict)
    bound: list[str] = field(default_factory=list)  # reduction variables currently in scope

    def use(self, var: str, span):
        self.uses.setdefault(var, span)

    def unify(self, var: str, dim: Dim, origin: str, span):
        self.use(var, span)
        if var in self.ranges:
            old, old_origin, _ = self.ranges[var]
            if old != dim:
                raise _err(
                    SdslTypeError,
                    f"index '{var}' ranges over {dim} here ({origin}) but over {old} in {old_origin}",
                    span,
                )
        else:
            self.ranges[var] = (dim, origin, span)


@dataclass
class Typed:
    """A checked expression, with whether it is a literal/const (which adopts the other operand's dtype)."""

    ir: N.Expr
    weak: bool = False


# ---------------------------------------------------------------- the checker

class Checker:
    def __init__(self, loader=None, path: str | None = None):
        from sparsedsl.tensor_ir.loader import ModuleLoader

        self.loader = loader if loader is not None else ModuleLoader()
        self.path = path
        self.decls: list[N.Decl] = []
        self.decl_index: dict[str, int] = {}
        self.names = NameSupply()
        self.schedules: list[N.Schedule] = []
        self.sizes: list[str] = []
        self.module_stack: list[str] = []
        self.call_stack: list[str] = []
        self.module_cache: dict[str, ModuleEnv] = {}
        self.defining: dict[str, list[N.Assign]] = {}  # IR name → statements that define it (for schedules)
        self.loop_locals: dict[str, Symbol] = {}  # program names local to a repeat body (for schedules)
        self.loop_depth = 0
        self.full_temps: dict[str, bool] = {}
        self.def_stack: list[str] = []  # names of the defs being inlined (their locals are renamed def_local)
        self.generated: set[str] = set()  # names the checker made fresh itself
        self.assigned_somewhere: set[str] = set()  # every assignment target of the program, for messages  # IR name → statically present everywhere

    # ------------------------------------------------------------ modules and imports

    def module_env(self, module: S.Module, path: str | None) -> ModuleEnv:
        env = ModuleEnv(module.name, path)
        for item in module.body:
            match item:
                case S.FuncDef():
                    self._declare_global(env, Symbol(item.name, "def", item.span, func=FuncInfo(item, env)))
                case S.Import():
                    sub = self.import_module(item.module, path, item.span)
                    alias = item.alias or item.module.split(".")[0]
                    if item.alias is None and "." in item.module:
                        # `import a.b` binds `a.b` as written; reach it through its last name too
                        alias = item.module.split(".")[-1]
                    self._declare_global(env, Symbol(alias, "module", item.span, module=sub))
                case S.FromImport():
                    sub = self.import_module(item.module, path, item.span)
                    for imp in item.names:
                        target = sub.symbols.get(imp.name)
                        if target is None or target.kind != "def":
                            raise _err(
                                SdslImportError, f"module '{item.module}' has no def '{imp.name}'", imp.span,
                                _suggest(imp.name, [n for n, s in sub.symbols.items() if s.kind == "def"]),
                            )
                        self._declare_global(env, replace(target, name=imp.alias or imp.name, span=imp.span))
        return env

    def _declare_global(self, env: ModuleEnv, sym: Symbol):
        old = env.symbols.get(sym.name)
        if old is not None:
            raise _err(SdslNameError, f"'{sym.name}' is already defined", sym.span,
                       f"first defined at {old.span}" if old.span else "")
        env.symbols[sym.name] = sym

    def import_module(self, name: str, importer: str | None, span) -> ModuleEnv:
        from_dir = Path(importer).parent if importer and not importer.startswith("<") else Path.cwd()
        path, module = self.loader.load(name, from_dir, span)
        if path in self.module_stack:
            chain = " -> ".join(Path(p).stem for p in self.module_stack[self.module_stack.index(path):])
            raise _err(SdslImportError, f"import cycle: {chain} -> {Path(path).stem}", span)
        if path in self.module_cache:
            return self.module_cache[path]
        for item in module.body:
            if isinstance(item, (S.InputDecl, S.OutputDecl)):
                raise _err(SdslImportError, f"'{name}' is a program (it declares inputs/outputs), not a module",
                           span, f"declared at {item.span}")
            if isinstance(item, (S.Assign, S.Repeat, S.ConstDecl, S.Schedule)):
                raise _err(SdslImportError,
                           f"module '{name}' has top-level statements; a module may hold only defs and imports",
                           item.span)
        self.module_stack.append(path)
        try:
            env = self.module_env(module, path)
        finally:
            self.module_stack.pop()
        self.module_cache[path] = env
        return env

    # ------------------------------------------------------------ program

    def check_program(self, module: S.Module) -> N.Program:
        self.module_stack.append(self.path or module.name)
        env = self.module_env(module, self.path)
        self.module_stack.pop()
        scope = Scope(module=env)
        has_io = any(isinstance(it, (S.InputDecl, S.OutputDecl)) for it in module.body)
        if not has_io:
            raise _err(SdslTypeError, "this file declares no inputs or outputs: it is a module, not a program",
                       module.body[0].span if module.body else (module.span or Span(None, 1, 1)),
                       "call its defs from a program, or use Program.function(name)")
        for name in env.symbols:
            self.names.reserve(name)
        self.assigned_somewhere = set(_targets(module.body))
        # Declarations first, in order: sizes are bound from input types; outputs are declared before use.
        for item in module.body:
            match item:
                case S.InputDecl():
                    self.declare_input(item, scope)
                case S.OutputDecl():
                    self.declare_output(item, scope)
                case S.ConstDecl():
                    self.declare_const(item, scope)
        body = self.check_block([it for it in module.body if isinstance(it, (S.Assign, S.Repeat, S.Return))],
                                scope)
        for item in module.body:
            if isinstance(item, S.Schedule):
                self.check_schedule(item, scope)
        for d in self.decls:
            if d.kind == "output":
                sym = scope.lookup(d.name)
                if not sym.assigned:
                    raise _err(SdslTypeError, f"output '{d.name}' is never assigned", d.span)
        self.finalize_outputs(scope)
        return N.Program(module.name, tuple(self.decls), tuple(body), tuple(self.schedules), tuple(self.sizes),
                         span=module.body[0].span if module.body else None)

    def fresh(self, hint: str) -> str:
        name = self.names.fresh(hint)
        self.generated.add(name)
        return name

    def static_full(self, name: str) -> bool:
        if name not in self.decl_index:
            return False
        d = self.decls[self.decl_index[name]]
        return d.type.format.is_dense or self.full_temps.get(name, False)

    def add_decl(self, decl: N.Decl):
        self.decl_index[decl.name] = len(self.decls)
        self.decls.append(decl)
        self.names.reserve(decl.name)

    def update_decl(self, name: str, **changes):
        i = self.decl_index[name]
        self.decls[i] = replace(self.decls[i], **changes)

    def check_new_name(self, name: str, span, scope: Scope):
        old = scope.lookup(name)
        if old is not None:
            raise _err(SdslNameError, f"'{name}' is already defined", span,
                       f"first defined at {old.span}" if old.span else "")
        if name in CONSTANT_NAMES:
            raise _err(SdslNameError, f"'{name}' is a built-in constant and cannot be redefined", span)

    def resolve_type(self, t: S.TypeExpr, scope: Scope, bind_sizes: bool, what: str) -> TensorType:
        if t.is_scalar:
            return TensorType(t.dtype)
        fmt = t.format
        nparams = FORMAT_NPARAMS[fmt.name]
        if len(fmt.params) != nparams:
            raise _err(SdslTypeError,
                       f"format '{fmt.name}' takes {nparams} parameter{'s' if nparams != 1 else ''}, "
                       f"got {len(fmt.params)}", fmt.span,
                       {"bsr": "write bsr(BM, BN) with the block size", "blockdiag": "write blockdiag(NB)",
                        "nm": "write nm(N, M): at most N of every M entries"}.get(fmt.name, ""))
        ranks = FORMAT_RANKS[fmt.name]
        if ranks is not None and len(t.shape) not in ranks:
            raise _err(SdslTypeError,
                       f"format '{fmt.name}' holds tensors of rank {' or '.join(map(str, ranks))}, "
                       f"not {len(t.shape)}", t.span)
        if not t.shape:
            raise _err(SdslTypeError, "a tensor type needs a shape: write e.g. csr<f32>[M, N]", t.span)
        dims = tuple(self.resolve_dim(d, scope, bind_sizes, t.span, what) for d in t.shape)
        params = tuple(self.resolve_dim(p, scope, bind_sizes, fmt.span, what) for p in fmt.params)
        return TensorType(t.dtype, dims, _checked_format(fmt.name, params, fmt.span, SdslTypeError))

    def resolve_dim(self, d, scope: Scope, bind: bool, span, what: str) -> Dim:
        if isinstance(d, int):
            if d < 0:
                raise _err(SdslTypeError, f"a dimension cannot be negative ({d})", span)
            return d
        sym = scope.lookup(d)
        if sym is not None and sym.kind == "size":
            return sym.dim
        if sym is not None:
            raise _err(SdslTypeError, f"'{d}' is {_a(sym.kind)}, not a size name", span)
        if not bind:
            raise _err(SdslTypeError, f"size '{d}' of {what} is not fixed by any input", span,
                       "sizes are bound from the inputs that carry them")
        scope_root = scope
        while scope_root.parent is not None:
            scope_root = scope_root.parent
        scope_root.define(Symbol(d, "size", span, ir_name=d, dim=d))
        if d not in self.sizes:
            self.sizes.append(d)
            self.names.reserve(d)
        return d

    def literal_value(self, e: S.Expr, scope: Scope, what: str) -> Typed:
        """Evaluate a compile-time scalar expression (defaults, fills, consts)."""
        ctx = StmtCtx()
        t = self.expr(e, scope, ctx)
        if N.free_indices(t.ir) or ctx.uses:
            raise _err(SdslTypeError, f"{what} must be a constant scalar expression", e.span)
        value = fold(t.ir)
        if value is None:
            raise _err(SdslTypeError, f"{what} must be a constant scalar expression (literals and consts only)",
                       e.span)
        return Typed(N.Lit(value, t.ir.dtype, span=e.span), t.weak)

    def declare_input(self, item: S.InputDecl, scope: Scope):
        self.check_new_name(item.name, item.span, scope)
        ttype = self.resolve_type(item.type, scope, bind_sizes=True, what=f"input '{item.name}'")
        default = None
        if item.default is not None:
            if not ttype.is_scalar:
                raise _err(SdslTypeError, f"only scalar inputs may have a default; '{item.name}' is a tensor",
                           item.default.span)
            lit = self.literal_value(item.default, scope, "a default value")
            default = self.coerce_literal(lit, ttype.dtype, item.default.span, f"the default of '{item.name}'")
        scope.define(Symbol(item.name, "input", item.span, ir_name=item.name, type=ttype, assigned=True,
                            full=ttype.format.is_dense))
        self.add_decl(N.Decl(item.name, ttype, "input", default=default, span=item.span))

    def declare_output(self, item: S.OutputDecl, scope: Scope):
        self.check_new_name(item.name, item.span, scope)
        ttype = None
        if item.type is not None:
            ttype = self.resolve_type(item.type, scope, bind_sizes=False, what=f"output '{item.name}'")
        fill = None
        if item.fill is not None:
            lit = self.literal_value(item.fill, scope, "a fill value")
            if ttype is not None:
                if ttype.format.is_sparse:
                    raise _err(SdslTypeError,
                               f"fill applies to dense outputs; '{item.name}' is {ttype.format} and stores only "
                               "present entries", item.fill.span)
                fill = self.coerce_literal(lit, ttype.dtype, item.fill.span, f"the fill of '{item.name}'")
            else:
                fill = lit.ir
        sym = Symbol(item.name, "output", item.span, ir_name=item.name, type=ttype, fill=fill)
        scope.define(sym)
        self.add_decl(N.Decl(item.name, ttype or TensorType("f64", (), AUTO), "output", fill=fill, span=item.span))

    def declare_const(self, item: S.ConstDecl, scope: Scope):
        self.check_new_name(item.name, item.span, scope)
        lit = self.literal_value(item.value, scope, f"const '{item.name}'")
        scope.define(Symbol(item.name, "const", item.span, ir_name=item.name, type=TensorType(lit.ir.dtype),
                            assigned=True, full=True, const=lit.ir, const_weak=lit.weak))
        self.add_decl(N.Decl(item.name, TensorType(lit.ir.dtype), "const", default=lit.ir, span=item.span))

    def coerce_literal(self, lit: Typed, dtype: str, span, what: str) -> N.Lit:
        value, src = lit.ir.value, lit.ir.dtype
        if dtype == "bool":
            if src != "bool":
                raise _err(SdslTypeError, f"{what} must be true or false", span)
            return N.Lit(bool(value), "bool", span=span)
        if dtype in INT_DTYPES:
            if src in FLOAT_DTYPES:
                raise _err(SdslTypeError, f"{what} is a float but the type is {dtype}", span)
            return N.Lit(int(value), dtype, span=span)
        return N.Lit(float(value), dtype, span=span)

    # ------------------------------------------------------------ statements

    def check_block(self, items, scope: Scope, in_def: bool = False) -> list[N.Stmt]:
        out: list[N.Stmt] = []
        for item in items:
            match item:
                case S.Assign():
                    out.extend(self.check_assign(item, scope))
                case S.Repeat():
                    out.append(self.check_repeat(item, scope))
                case S.Return():
                    if not in_def:
                        raise _err(SdslTypeError, "'return' outside a def", item.span)
                case S.InputDecl() | S.OutputDecl() | S.ConstDecl():
                    raise _err(SdslTypeError, "declarations belong at the top level of a program", item.span)
                case S.FuncDef():
                    raise _err(SdslTypeError, "defs belong at the top level of a file", item.span)
                case S.Import() | S.FromImport():
                    raise _err(SdslTypeError, "imports belong at the top level of a file", item.span)
                case S.Schedule():
                    raise _err(SdslScheduleError, "schedule blocks belong at the top level of a program", item.span)
        return out

    def require_ranges(self, ctx: StmtCtx):
        for v, sp in ctx.uses.items():
            if v not in ctx.ranges:
                raise _err(SdslTypeError, f"cannot tell the range of index '{v}'", sp,
                           "an index needs a plain use in a tensor access (A[..., v, ...]); "
                           f"if '{v}' was meant as a tensor or scalar, it is not defined")

    def check_repeat(self, item: S.Repeat, scope: Scope) -> N.Repeat:
        max_iters = None
        if item.max_iters is not None:
            ctx = StmtCtx()
            t = self.expr(item.max_iters, scope, ctx)
            self.require_ranges(ctx)
            if N.free_indices(t.ir):
                raise _err(SdslTypeError, "'at most' needs a scalar integer expression", item.max_iters.span)
            if t.ir.dtype not in INT_DTYPES:
                raise _err(SdslTypeError, f"'at most' needs an integer, got {t.ir.dtype}", item.max_iters.span)
            max_iters = t.ir if t.ir.dtype == "i64" else N.Cast(t.ir, "i64", span=t.ir.span)
        outer_assigned = {n for n in scope.all_names() if (s := scope.lookup(n)) is not None and s.assigned}
        body_scope = Scope(parent=scope)
        self.loop_depth += 1
        try:
            body = self.check_block(item.body, body_scope)
        finally:
            self.loop_depth -= 1
        until = None
        if item.until is not None:
            ctx = StmtCtx()
            t = self.expr(item.until, body_scope, ctx)
            self.require_ranges(ctx)
            if N.free_indices(t.ir):
                raise _err(SdslTypeError, "'until' needs a scalar condition (reduce every index)", item.until.span)
            if t.ir.dtype != "bool":
                raise _err(SdslTypeError, f"'until' needs a bool condition, got {t.ir.dtype}", item.until.span)
            until = t.ir
        carried = []
        for stmt in N.walk_assigns(body):
            sym = _lookup_ir(scope, stmt.target)
            if sym is not None and sym.name in outer_assigned and stmt.target not in carried:
                carried.append(stmt.target)
        return N.Repeat(max_iters, until, tuple(body), tuple(carried), span=item.span)

    def check_assign(self, item: S.Assign, scope: Scope) -> list[N.Stmt]:
        pre: list[N.Stmt] = []
        if item.indices is None:
            value_ast, where_ast, indices, pre = self.desugar_whole(item, scope)
        else:
            value_ast, where_ast, indices = item.value, item.where, item.indices
        stmt = self.check_index_assign(item, indices, value_ast, where_ast, scope)
        return pre + [stmt]

    def target_symbol(self, item: S.Assign, scope: Scope) -> Symbol | None:
        sym = scope.lookup(item.target)
        if sym is None:
            return None
        if sym.kind == "input":
            raise _err(SdslTypeError, f"cannot assign to input '{item.target}'", item.span)
        if sym.kind in ("const", "size", "def", "module"):
            raise _err(SdslTypeError, f"cannot assign to {sym.kind} '{item.target}'", item.span)
        return sym

    def check_index_assign(self, item: S.Assign, indices, value_ast, where_ast, scope: Scope) -> N.Assign:
        sym = self.target_symbol(item, scope)
        accumulate = item.op != "="
        if accumulate:
            if sym is None or not sym.assigned:
                raise _err(SdslTypeError, f"'{item.target}' must be assigned before '{item.op}' accumulates into it",
                           item.span)
        elif sym is not None and sym.assigned:
            carried = self.loop_depth > 0 and self._is_outer(scope, item.target)
            if not carried:
                raise _err(SdslTypeError, f"'{item.target}' is already assigned; a name is assigned once",
                           item.span, f"first assigned at {sym.assign_span}" if sym.assign_span else "",
                           "use +=, max= or min= to accumulate, or a repeat block to iterate")
        ctx = StmtCtx()
        idx: list[str] = []
        for ix in indices:
            if not isinstance(ix, S.Name):
                raise _err(SdslTypeError, "the left side takes plain index variables", ix.span)
            other = scope.lookup(ix.id)
            if other is not None or ix.id in CONSTANT_NAMES:
                raise _err(SdslTypeError, f"'{ix.id}' is {_a(other.kind) if other else 'a constant'}, not an index "
                           "variable; the left side takes index variables", ix.span)
            if ix.id in idx:
                raise _err(SdslTypeError, f"index '{ix.id}' appears twice on the left side", ix.span)
            idx.append(ix.id)
        ttype = sym.type if sym is not None else None
        if ttype is not None:
            if ttype.rank != len(idx):
                raise _err(SdslTypeError,
                           f"'{item.target}' has rank {ttype.rank} but is assigned with {len(idx)} "
                           f"ind{'ex' if len(idx) == 1 else 'ices'}", item.span)
            for v, d, ix in zip(idx, ttype.shape, indices):
                ctx.unify(v, d, f"'{item.target}' dimension {idx.index(v)}", ix.span)
        value = self.expr(value_ast, scope, ctx)
        ir = value.ir
        if where_ast is not None:
            mask = self.mask(where_ast, scope, ctx)
            ir = N.Where(ir, mask, ir.dtype, span=where_ast.span)
        free = N.free_indices(ir)
        for v in free:
            if v not in idx:
                raise _err(SdslTypeError,
                           f"index '{v}' is free on the right side but not on the left",
                           ctx.uses.get(v) or value_ast.span,
                           f"reduce it (e.g. sum[{v}] ...) or add it to '{item.target}[...]'")
        for v, ix in zip(idx, indices):
            if v not in ctx.ranges:
                raise _err(SdslTypeError, f"cannot tell the range of index '{v}'", ix.span,
                           f"no access on the right side uses '{v}' and '{item.target}' has no declared type")
            ctx.use(v, ix.span)
        self.require_ranges(ctx)
        shape = tuple(ctx.ranges[v][0] for v in idx)
        # Storing converts to the target's dtype; a new name takes the value's dtype.
        if ttype is not None:
            ir = self.convert_for_store(ir, value.weak, ttype.dtype, item.target, value_ast.span)
        if sym is None:
            if item.target in self.generated or not self.def_stack:
                ir_name = item.target  # a user's top-level name, or one the checker already made fresh
                self.names.reserve(ir_name)
            else:
                ir_name = self.names.fresh(f"{self.def_stack[-1]}_{item.target}")  # a def's local
            sym = Symbol(item.target, "temp", item.span, ir_name=ir_name)
            scope.define(sym)
            if self.loop_depth and not self.def_stack:
                # local to a repeat body, yet a top-level schedule may name it (spec § 8: the statements
                # that define NAME)
                self.loop_locals.setdefault(item.target, sym)
        full_value = is_full(ir, self.static_full, assume_nonempty=True)
        if sym.type is None:
            fmt = AUTO
            if sym.kind == "output":
                fmt = DENSE if (full_value or not shape) else (Format("csr") if len(shape) == 2 else Format("coo"))
            sym.type = TensorType(ir.dtype, shape, fmt)
            if sym.kind == "temp":
                self.add_decl(N.Decl(sym.ir_name, sym.type, "temp", span=item.span))
            else:
                self.update_decl(sym.ir_name, type=sym.type)
        if not accumulate:
            if sym.type.format.is_dense or sym.type.is_scalar and sym.kind == "output":
                sym.full = True
            else:
                sym.full = full_value
        elif sym.type.format.name == "auto":
            sym.full = sym.full or full_value
        if not sym.assigned:
            sym.assign_span = item.span
        sym.assigned = True
        self.full_temps[sym.ir_name] = sym.full
        ranges = tuple((v, d) for v, (d, _, _) in ctx.ranges.items())
        stmt = N.Assign(sym.ir_name, tuple(idx), item.op, ir, ranges, span=item.span)
        self.defining.setdefault(sym.ir_name, []).append(stmt)
        return stmt

    def _is_outer(self, scope: Scope, name: str) -> bool:
        """True when ``name`` was defined outside the innermost repeat body (so reassigning it carries it)."""
        return name not in scope.symbols

    def convert_for_store(self, ir: N.Expr, weak: bool, dtype: str, target: str, span) -> N.Expr:
        src = ir.dtype
        if src == dtype:
            return ir
        if weak and isinstance(ir, N.Lit):
            return self.coerce_literal(Typed(ir, True), dtype, span, f"the value stored in '{target}'")
        ok = (src == "bool" or (src in INT_DTYPES and dtype in INT_DTYPES + FLOAT_DTYPES)
              or (src in FLOAT_DTYPES and dtype in FLOAT_DTYPES))
        if not ok:
            raise _err(SdslTypeError, f"cannot store a {src} value in '{target}' of type {dtype}", span,
                       f"convert explicitly, e.g. {dtype}(...)")
        return N.Cast(ir, dtype, span=ir.span)

    # ------------------------------------------------------------ whole-tensor sugar and def calls

    def desugar_whole(self, item: S.Assign, scope: Scope):
        """``X = e`` without indices: a scalar, a whole-tensor expression, or a def call."""
        pre: list[N.Stmt] = []
        value = self.hoist_calls(item.value, scope, pre)
        where = self.hoist_calls(item.where, scope, pre) if item.where is not None else None
        rank = self.whole_rank(value, scope)
        if where is not None:
            wrank = self.whole_rank(where, scope)
            if rank is None and wrank is not None:
                rank = wrank
        if rank is None or rank == 0:
            if where is not None and self.whole_rank(where, scope):
                raise _err(SdslTypeError, "a scalar value cannot be masked by a tensor", where.span)
            if rank == 0:  # vector @ vector: a scalar, sum[k] v[k] * w[k]
                value = self.to_index(value, [], scope, NameSupply(scope.all_names() | set(self.sizes)))
            return value, where, (), pre
        taken = scope.all_names() | set(self.sizes)
        supply = NameSupply(taken)
        hints = ["i", "j", "l", "m", "n"]
        idx = [S.Name(supply.fresh(hints[d] if d < len(hints) else f"i{d}"), span=item.span) for d in range(rank)]
        value_ix = self.to_index(value, idx, scope, supply)
        where_ix = self.to_index(where, idx, scope, supply) if where is not None else None
        return value_ix, where_ix, tuple(idx), pre

    def whole_rank(self, e: S.Expr, scope: Scope) -> int | None:
        """Rank of a whole-tensor expression, or None when ``e`` is in index/scalar form."""
        match e:
            case S.Name(id=name):
                sym = scope.lookup(name)
                if sym is not None and sym.type is not None and sym.kind not in ("size", "const"):
                    return sym.type.rank or None
                return None
            case S.Attribute(value=v, attr="T"):
                r = self.whole_rank(v, scope)
                if r is None or r > 2:
                    raise _err(SdslTypeError, ".T transposes a whole matrix or vector", e.span)
                return r
            case S.BinOp(op="@", left=a, right=b):
                ra, rb = self.whole_rank(a, scope), self.whole_rank(b, scope)
                if ra is None or rb is None or ra > 2 or rb > 2:
                    raise _err(SdslTypeError, "'@' multiplies whole matrices or vectors", e.span,
                               "in index notation write sum[k] A[i, k] * B[k, j]")
                return {(2, 2): 2, (2, 1): 1, (1, 2): 1, (1, 1): 0}[(ra, rb)]
            case S.BinOp(left=a, right=b):
                ranks = [r for r in (self.whole_rank(a, scope), self.whole_rank(b, scope)) if r is not None]
                if len(set(ranks)) > 1:
                    raise _err(SdslTypeError, f"element-wise '{e.op}' of tensors of ranks {ranks[0]} and {ranks[1]}",
                               e.span)
                return ranks[0] if ranks else None
            case S.UnaryOp(operand=a):
                return self.whole_rank(a, scope)
            case S.Call(args=args):
                ranks = [r for r in (self.whole_rank(a, scope) for a in args) if r is not None]
                if len(set(ranks)) > 1:
                    raise _err(SdslTypeError, "element-wise call on tensors of different ranks", e.span)
                return ranks[0] if ranks else None
            case S.Where(value=v, cond=c):
                rv, rc = self.whole_rank(v, scope), self.whole_rank(c, scope)
                if rv is not None and rc is not None and rv != rc:
                    raise _err(SdslTypeError, "mask rank differs from the value's rank", e.span)
                return rv if rv is not None else rc
            case S.Access() | S.Prefix():
                if _mentions_whole(e, scope):
                    raise _err(SdslTypeError,
                               "index notation and whole-tensor names are mixed in one expression", e.span,
                               "give every tensor its indices, e.g. X[i, j] = ...")
                return None
        return None

    def to_index(self, e: S.Expr, idx: list[S.Name], scope: Scope, supply: NameSupply) -> S.Expr:
        """Rewrite a whole-tensor expression into index notation over ``idx``."""
        sp = e.span
        match e:
            case S.Name(id=name):
                sym = scope.lookup(name)
                if sym is not None and sym.type is not None and sym.type.rank and sym.kind not in ("size", "const"):
                    if sym.type.rank != len(idx):
                        raise _err(SdslTypeError, f"'{name}' has rank {sym.type.rank}; expected {len(idx)}", sp)
                    return S.Access(e, tuple(idx), span=sp)
                return e
            case S.Attribute(value=v, attr="T"):
                return self.to_index(v, list(reversed(idx)), scope, supply)
            case S.BinOp(op="@", left=a, right=b):
                ra, rb = self.whole_rank(a, scope), self.whole_rank(b, scope)
                k = S.Name(supply.fresh("k"), span=sp)
                ia = [idx[0], k] if ra == 2 else [k]
                ib = ([k, idx[-1]] if rb == 2 else [k])
                prod = S.BinOp("*", self.to_index(a, ia, scope, supply), self.to_index(b, ib, scope, supply), span=sp)
                return S.Prefix("sum", (k,), prod, span=sp)
            case S.BinOp(op=op, left=a, right=b):
                return S.BinOp(op, self.to_index(a, idx, scope, supply), self.to_index(b, idx, scope, supply), span=sp)
            case S.UnaryOp(op=op, operand=a):
                return S.UnaryOp(op, self.to_index(a, idx, scope, supply), span=sp)
            case S.Call(func=f, args=args, kwargs=kw):
                return S.Call(f, tuple(self.to_index(a, idx, scope, supply) for a in args), kw, span=sp)
            case S.Where(value=v, cond=c):
                return S.Where(self.to_index(v, idx, scope, supply), self.to_index(c, idx, scope, supply), span=sp)
        return e

    def hoist_calls(self, e: S.Expr, scope: Scope, pre: list[N.Stmt]) -> S.Expr:
        """Inline every def call in a whole-tensor expression; the call is replaced by its result's name."""
        if e is None:
            return None
        match e:
            case S.Call(func=f, args=args, kwargs=kw):
                info = self.resolve_def(f, scope)
                args = tuple(self.hoist_calls(a, scope, pre) for a in args)
                if info is None:
                    return S.Call(f, args, kw, span=e.span)
                if kw:
                    raise _err(SdslTypeError, "defs take positional arguments", kw[0].span)
                result = self.inline_call(info, args, e, scope, pre)
                return S.Name(result, span=e.span)
            case S.BinOp(op=op, left=a, right=b):
                return S.BinOp(op, self.hoist_calls(a, scope, pre), self.hoist_calls(b, scope, pre), span=e.span)
            case S.UnaryOp(op=op, operand=a):
                return S.UnaryOp(op, self.hoist_calls(a, scope, pre), span=e.span)
            case S.Attribute(value=v, attr=a):
                return S.Attribute(self.hoist_calls(v, scope, pre), a, span=e.span)
            case S.Where(value=v, cond=c):
                return S.Where(self.hoist_calls(v, scope, pre), self.hoist_calls(c, scope, pre), span=e.span)
        return e

    def resolve_def(self, f: S.Expr, scope: Scope) -> FuncInfo | None:
        match f:
            case S.Name(id=name):
                sym = scope.lookup(name)
                if sym is not None and sym.kind == "def":
                    return sym.func
                return None
            case S.Attribute(value=S.Name(id=mod), attr=fn):
                sym = scope.lookup(mod)
                if sym is None or sym.kind != "module":
                    raise _err(SdslNameError, f"'{mod}' is not an imported module", f.value.span)
                target = sym.module.symbols.get(fn)
                if target is None or target.kind != "def":
                    raise _err(SdslNameError, f"module '{mod}' has no def '{fn}'", f.span,
                               _suggest(fn, [n for n, s in sym.module.symbols.items() if s.kind == "def"]))
                return target.func
        raise _err(SdslTypeError, "only builtins and defs can be called", f.span)

    def inline_call(self, info: FuncInfo, args, call: S.Call, scope: Scope, pre: list[N.Stmt]) -> str:
        fn = info.node
        key = f"{info.env.path}:{fn.name}"
        if key in self.call_stack:
            raise _err(SdslTypeError, f"recursive call of '{fn.name}' (defs are inlined; recursion is not allowed)",
                       call.span)
        if len(args) != len(fn.params):
            raise _err(SdslTypeError, f"'{fn.name}' takes {len(fn.params)} argument"
                       f"{'s' if len(fn.params) != 1 else ''}, got {len(args)}", call.span,
                       f"defined at {fn.span}" if fn.span else "")
        body_scope = Scope(module=info.env)
        for param, arg in zip(fn.params, args):
            self.bind_param(fn, param, arg, scope, body_scope, pre)
        self.call_stack.append(key)
        self.def_stack.append(fn.name)
        try:
            stmts = [s for s in fn.body if not isinstance(s, S.Return)]
            returns = [s for s in fn.body if isinstance(s, S.Return)]
            if len(returns) != 1 or not isinstance(fn.body[-1], S.Return):
                raise _err(SdslTypeError, f"def '{fn.name}' must end with one 'return'", fn.span)
            pre.extend(self.check_block(stmts, body_scope, in_def=True))
            ret = returns[0].value
            result = self.fresh(f"{fn.name}_out")
            assign = S.Assign(result, None, "=", ret, span=returns[0].span)
            if isinstance(ret, S.Name) and (s := body_scope.lookup(ret.id)) is not None and s.kind == "temp":
                out_name = s.ir_name
            else:
                pre.extend(self.check_assign(replace(assign, target=result), body_scope))
                out_name = body_scope.lookup(result).ir_name
            out_sym = _lookup_ir(body_scope, out_name)
            if fn.result is not None:
                rtype = self.resolve_type(fn.result, body_scope, bind_sizes=False, what=f"the result of '{fn.name}'")
                if out_sym.type.dtype != rtype.dtype or out_sym.type.rank != rtype.rank or any(
                        a != b for a, b in zip(out_sym.type.shape, rtype.shape)):
                    raise _err(SdslTypeError,
                               f"'{fn.name}' returns {out_sym.type.dtype}[{', '.join(map(str, out_sym.type.shape))}]"
                               f" but declares {rtype}", returns[0].span)
        finally:
            self.call_stack.pop()
            self.def_stack.pop()
        caller = Symbol(out_name, "temp", call.span, ir_name=out_name, type=out_sym.type, assigned=True,
                        full=out_sym.full, assign_span=call.span)
        scope.define(caller)
        return out_name

    def bind_param(self, fn: S.FuncDef, param: S.Param, arg: S.Expr, scope: Scope, body: Scope, pre):
        if isinstance(arg, S.Name) and (sym := scope.lookup(arg.id)) is not None and sym.kind in (
                "input", "output", "temp", "const") and sym.assigned:
            actual = sym
        else:
            # an expression argument is evaluated once into a temp of the parameter's dtype
            tmp = self.fresh(f"{fn.name}_{param.name}")
            value = S.Call(S.Name(param.type.dtype, span=arg.span), (arg,), span=arg.span)
            pre.extend(self.check_assign(S.Assign(tmp, None, "=", value, span=arg.span), scope))
            actual = scope.lookup(tmp)
        atype = actual.type
        ptype = param.type
        what = f"argument '{param.name}' of '{fn.name}'"
        if ptype.is_scalar:
            if not atype.is_scalar:
                raise _err(SdslTypeError, f"{what} must be a scalar {ptype.dtype}, got a tensor", arg.span)
        else:
            if atype.rank != len(ptype.shape):
                raise _err(SdslTypeError, f"{what} must have rank {len(ptype.shape)}, got {atype.rank}", arg.span)
            for pd, ad in zip(ptype.shape, atype.shape):
                if isinstance(pd, int):
                    if pd != ad:
                        raise _err(SdslTypeError, f"{what}: dimension {pd} expected, got {ad}", arg.span)
                    continue
                bound = body.symbols.get(pd)
                if bound is None:
                    body.define(Symbol(pd, "size", param.span, ir_name=str(ad), dim=ad))
                elif bound.kind == "size" and bound.dim != ad:
                    raise _err(SdslTypeError,
                               f"size '{pd}' of '{fn.name}' is {bound.dim} from an earlier argument but {ad} "
                               f"from '{param.name}'", arg.span)
        if atype.dtype != ptype.dtype:
            ok = atype.dtype == "bool" or (atype.dtype in INT_DTYPES and ptype.dtype not in ("bool",)) or (
                atype.dtype in FLOAT_DTYPES and ptype.dtype in FLOAT_DTYPES)
            if not ok:
                raise _err(SdslTypeError, f"{what} must be {ptype.dtype}, got {atype.dtype}", arg.span)
        fmt_ok = True
        if not ptype.is_scalar and ptype.format is not None and ptype.format.name == "dense" and not actual.full:
            fmt_ok = False
        if atype.dtype != ptype.dtype or not fmt_ok:
            # Convert into a temp of the parameter's dtype; a sparse value passed for a dense parameter reads
            # absent entries as 0 (what storing it into a dense tensor would give).
            tmp = self.fresh(f"{fn.name}_{param.name}")
            src: S.Expr = S.Name(actual.name, span=arg.span)
            if not fmt_ok:
                src = S.Call(S.Name("fill"), (src, S.Number(0, "0")), span=arg.span)
            src = S.Call(S.Name(ptype.dtype), (src,), span=arg.span)
            pre.extend(self.check_assign(S.Assign(tmp, None, "=", src, span=arg.span), scope))
            actual = scope.lookup(tmp)
        elif ptype.dtype == "bool" and not ptype.is_scalar and ptype.format is not None \
                and ptype.format.name not in ("dense", "auto") \
                and not (actual.kind == "input" and actual.type.format.name not in ("dense", "auto")):
            # a sparse bool parameter is a pattern (spec 3): a computed bool argument may store false entries,
            # which the def must read as true, as a bound input's are
            tmp = self.fresh(f"{fn.name}_{param.name}")
            pattern = S.Assign(tmp, None, "=", S.Bool(True, span=arg.span), S.Name(actual.name, span=arg.span),
                               span=arg.span)
            pre.extend(self.check_assign(pattern, scope))
            actual = scope.lookup(tmp)
        if param.name in body.symbols:
            raise _err(SdslNameError, f"parameter '{param.name}' appears twice", param.span)
        # parameters are read-only inside the def, whatever the argument was in the caller
        body.define(replace(actual, name=param.name, span=param.span, kind="input"))

    # ------------------------------------------------------------ expressions

    def expr(self, e: S.Expr, scope: Scope, ctx: StmtCtx) -> Typed:
        sp = e.span
        match e:
            case S.Number(value=v):
                if isinstance(v, bool):
                    return Typed(N.Lit(v, "bool", span=sp), True)
                if isinstance(v, int):
                    return Typed(N.Lit(_i64_literal(v, sp), "i64", span=sp), True)
                return Typed(N.Lit(float(v), "f64", span=sp), True)
            case S.Bool(value=v):
                return Typed(N.Lit(bool(v), "bool", span=sp), True)
            case S.Name(id=name):
                return self.name_expr(e, scope, ctx)
            case S.Access():
                return Typed(self.access(e, scope, ctx))
            case S.Attribute(attr="T"):
                raise _err(SdslTypeError, "'.T' is whole-tensor sugar; in index notation swap the indices "
                           "(A[j, i])", sp)
            case S.Attribute():
                raise _err(SdslTypeError, f"'{S_text(e)}' is not a value", sp)
            case S.BinOp():
                return self.binop(e, scope, ctx)
            case S.UnaryOp(op="-", operand=a):
                t = self.expr(a, scope, ctx)
                dt = "i64" if t.ir.dtype == "bool" else t.ir.dtype
                if isinstance(t.ir, N.Lit) and t.weak:
                    return Typed(N.Lit(-t.ir.value, dt, span=sp), True)
                return Typed(N.Unary("-", _cast(t.ir, dt), dt, span=sp), t.weak)
            case S.UnaryOp(op="not", operand=a):
                t = self.expr(a, scope, ctx)
                return Typed(N.Unary("not", t.ir, "bool", span=sp))
            case S.Call():
                return self.call(e, scope, ctx)
            case S.Prefix():
                return self.prefix(e, scope, ctx)
            case S.Where(value=v, cond=c):
                t = self.expr(v, scope, ctx)
                m = self.mask(c, scope, ctx)
                return Typed(N.Where(t.ir, m, t.ir.dtype, span=sp), t.weak)
        raise _err(SdslTypeError, "unsupported expression", sp)

    def name_expr(self, e: S.Name, scope: Scope, ctx: StmtCtx) -> Typed:
        name, sp = e.id, e.span
        if name not in ctx.bound and scope.lookup(name) is None and name in self.assigned_somewhere:
            raise _err(SdslNameError, f"'{name}' is not assigned at this point", sp,
                       "names assigned inside a repeat body are local to it; assign it before the loop to carry it")
        if name in ctx.bound or (scope.lookup(name) is None and name not in CONSTANT_NAMES):
            ctx.use(name, sp)
            return Typed(N.IndexVal(name, span=sp))
        if name in CONSTANT_NAMES:
            return Typed(N.Lit(CONSTANT_NAMES[name], "f64", span=sp), True)
        sym = scope.lookup(name)
        if sym.kind == "size":
            if isinstance(sym.dim, int):
                return Typed(N.Lit(sym.dim, "i64", span=sp))
            return Typed(N.ScalarRef(sym.dim, "i64", is_size=True, span=sp))
        if sym.kind == "const":
            return Typed(replace(sym.const, span=sp), sym.const_weak)
        if sym.kind in ("def", "module"):
            raise _err(SdslTypeError, f"'{name}' is a {sym.kind}, not a value", sp)
        if not sym.assigned:
            raise _err(SdslNameError, f"'{name}' is used before it is assigned", sp)
        if sym.type.rank:
            raise _err(SdslTypeError, f"'{name}' is a tensor of rank {sym.type.rank}; index it "
                       f"({name}[{', '.join('ijkl'[:sym.type.rank])}])", sp,
                       "or write the whole statement without indices (X = A + B)")
        return Typed(N.ScalarRef(sym.ir_name, sym.type.dtype, span=sp))

    def access(self, e: S.Access, scope: Scope, ctx: StmtCtx, gather_depth: int = 0) -> N.Access:
        if isinstance(e.base, S.Attribute) and e.base.attr == "T":
            raise _err(SdslTypeError, "'.T' is whole-tensor sugar; in index notation swap the indices "
                       "(A[j, i])", e.span)
        if not isinstance(e.base, S.Name):
            raise _err(SdslTypeError, "only named tensors can be indexed", e.base.span)
        name = e.base.id
        sym = scope.lookup(name)
        if sym is None or sym.kind in ("def", "module", "size"):
            if sym is None:
                if name in self.assigned_somewhere:
                    raise _err(SdslNameError, f"'{name}' is used before it is assigned", e.base.span)
                cands = [n for n in scope.all_names() if (s := scope.lookup(n)) and s.kind not in ("def", "module")]
                raise _err(SdslNameError, f"unknown tensor '{name}'", e.base.span, _suggest(name, cands))
            raise _err(SdslTypeError, f"'{name}' is a {sym.kind} and cannot be indexed", e.base.span)
        if sym.kind == "const" or (sym.type is not None and sym.type.is_scalar):
            raise _err(SdslTypeError, f"'{name}' is a scalar and cannot be indexed", e.span)
        if not sym.assigned:
            raise _err(SdslNameError, f"'{name}' is used before it is assigned", e.base.span)
        ttype = sym.type
        if len(e.indices) != ttype.rank:
            raise _err(SdslTypeError, f"'{name}' has rank {ttype.rank} but is indexed with {len(e.indices)} "
                       f"ind{'ex' if len(e.indices) == 1 else 'ices'}", e.span)
        pos = []
        for d, ix in enumerate(e.indices):
            if isinstance(ix, S.Name) and (ix.id in ctx.bound or scope.lookup(ix.id) is None) \
                    and ix.id not in CONSTANT_NAMES:
                ctx.unify(ix.id, ttype.shape[d], f"'{name}' dimension {d}", ix.span)
                pos.append(N.IndexVal(ix.id, span=ix.span))
            else:
                pos.append(self.position(ix, scope, ctx, gather_depth))
        return N.Access(sym.ir_name, tuple(pos), ttype.dtype, span=e.span)

    def position(self, ix: S.Expr, scope: Scope, ctx: StmtCtx, gather_depth: int) -> N.Expr:
        """An affine or gathered coordinate: integer arithmetic of index variables, scalars and one gather."""
        match ix:
            case S.Number(value=v) if isinstance(v, int) and not isinstance(v, bool):
                return N.Lit(_i64_literal(v, ix.span), "i64", span=ix.span)
            case S.Name():
                t = self.name_expr(ix, scope, ctx)
                if t.ir.dtype not in INT_DTYPES:
                    raise _err(SdslTypeError, f"a coordinate must be an integer, '{ix.id}' is {t.ir.dtype}", ix.span)
                return _cast(t.ir, "i64")
            case S.BinOp(op=op, left=a, right=b) if op in ("+", "-", "*", "//", "%"):
                la = self.position(a, scope, ctx, gather_depth)
                lb = self.position(b, scope, ctx, gather_depth)
                if op == "*" and N.free_indices(la) and N.free_indices(lb):
                    raise _err(SdslTypeError, "a coordinate may multiply an index only by a constant or scalar "
                               "(affine access)", ix.span)
                if op in ("//", "%") and N.free_indices(lb):
                    # blocked layouts (4 * (i // 4) + i % 4) divide by constants, never by an index
                    raise _err(SdslTypeError, f"a coordinate may use '{op}' only with a constant or scalar "
                               "divisor", ix.span)
                if op in ("//", "%") and isinstance(lb, N.Lit) and lb.value == 0:
                    raise _err(SdslTypeError, f"a coordinate divides by zero ('{op} 0')", b.span)
                return N.Binary(op, la, lb, "i64", span=ix.span)
            case S.UnaryOp(op="-", operand=a):
                return N.Unary("-", self.position(a, scope, ctx, gather_depth), "i64", span=ix.span)
            case S.Access():
                if gather_depth >= 1:
                    raise _err(SdslTypeError, "only one level of indirection is allowed in a coordinate", ix.span)
                acc = self.access(ix, scope, ctx, gather_depth + 1)
                if acc.dtype not in INT_DTYPES:
                    raise _err(SdslTypeError, f"a gather index must be an integer tensor, '{ix.base.id}' is "
                               f"{acc.dtype}", ix.span)
                return _cast(acc, "i64")
        raise _err(SdslTypeError, "a coordinate must be an index variable, an affine expression (4 * g + r, i + 1) "
                   "or a gather (P[i])", ix.span)

    def binop(self, e: S.BinOp, scope: Scope, ctx: StmtCtx) -> Typed:
        op, sp = e.op, e.span
        if op == "@":
            raise _err(SdslTypeError, "'@' multiplies whole tensors (X = A @ B)", sp,
                       "in index notation write sum[k] A[i, k] * B[k, j]")
        a = self.expr(e.left, scope, ctx)
        b = self.expr(e.right, scope, ctx)
        if op in ("and", "or"):
            la, lb = _cast(a.ir, "bool"), _cast(b.ir, "bool")
            return Typed(N.Binary(op, la, lb, "bool", span=sp), a.weak and b.weak)
        dt = self.common(a, b)
        weak = a.weak and b.weak
        if op in N.COMPARISONS:
            return Typed(N.Binary(op, self.retype(a, dt), self.retype(b, dt), "bool", span=sp), weak)
        if op in ("&", "|"):
            if dt in FLOAT_DTYPES:
                raise _err(SdslTypeError, f"'{op}' needs bool or integer operands, got {dt}", sp)
            return Typed(N.Binary(op, self.retype(a, dt), self.retype(b, dt), dt, span=sp), weak)
        if dt == "bool":
            dt = "i64"  # arithmetic on bools counts (bool reads as 0/1)
        if op == "/" and dt in INT_DTYPES:
            dt = "f64"
        return Typed(N.Binary(op, self.retype(a, dt), self.retype(b, dt), dt, span=sp), weak)

    def common(self, a: Typed, b: Typed) -> str:
        da, db = a.ir.dtype, b.ir.dtype
        if a.weak and not b.weak:
            return _adopt(da, db)
        if b.weak and not a.weak:
            return _adopt(db, da)
        return promote(da, db)

    def retype(self, t: Typed, dtype: str) -> N.Expr:
        if t.ir.dtype == dtype:
            return t.ir
        if t.weak and isinstance(t.ir, N.Lit):
            v = t.ir.value
            if dtype == "bool":
                v = bool(v)
            elif dtype in INT_DTYPES:
                v = int(v)
                if _int_cast(v, "i64", dtype) != v:
                    # numpy (NEP 50) refuses such a Python int too; wrapping it would compare x < 300 as x < 44
                    raise _err(SdslTypeError, f"the literal {v} does not fit in {dtype}, the type it takes from "
                               "the other operand", t.ir.span,
                               f"cast the other operand (i64(...)) or write a value that fits in {dtype}")
            else:
                v = float(v)
            return N.Lit(v, dtype, span=t.ir.span)
        return N.Cast(t.ir, dtype, span=t.ir.span)

    def call(self, e: S.Call, scope: Scope, ctx: StmtCtx) -> Typed:
        sp = e.span
        if not isinstance(e.func, S.Name):
            if isinstance(e.func, S.Attribute):
                raise _err(SdslTypeError, "a def is called on whole tensors (X = mod.f(...)), not inside index "
                           "notation", sp)
            raise _err(SdslTypeError, "only builtins and defs can be called", sp)
        fname = e.func.id
        sym = scope.lookup(fname)
        if sym is not None and sym.kind == "def":
            raise _err(SdslTypeError, f"def '{fname}' is called on whole tensors (X = {fname}(...)), not inside "
                       "index notation", sp)
        if sym is not None:
            raise _err(SdslTypeError, f"'{fname}' is {_a(sym.kind)}, not a function", e.func.span)
        if e.kwargs:
            raise _err(SdslTypeError, f"'{fname}' takes no keyword arguments", e.kwargs[0].span)
        args = [self.expr(a, scope, ctx) for a in e.args]

        def arity(n):
            if len(args) != n:
                raise _err(SdslTypeError, f"'{fname}' takes {n} argument{'s' if n != 1 else ''}, got {len(args)}",
                           sp)

        if fname in S.SCALAR_TYPES:
            arity(1)
            a = args[0]
            if isinstance(a.ir, N.Lit):
                return Typed(self.coerce_cast_literal(a.ir, fname), False)
            return Typed(N.Cast(a.ir, fname, span=sp))
        if fname in FLOAT_FUNCS:
            arity(1)
            dt = args[0].ir.dtype
            dt = dt if dt in FLOAT_DTYPES else "f64"
            return Typed(N.Call(fname, (self.retype(args[0], dt),), dt, span=sp), args[0].weak)
        if fname in KEEP_FUNCS:
            arity(1)
            dt = args[0].ir.dtype
            if dt == "bool":
                dt = "i64"
            return Typed(N.Call(fname, (self.retype(args[0], dt),), dt, span=sp), args[0].weak)
        if fname in ("max", "min", "pow"):
            arity(2)
            dt = self.common(args[0], args[1])
            if dt == "bool" and fname == "pow":
                dt = "i64"
            return Typed(N.Call(fname, (self.retype(args[0], dt), self.retype(args[1], dt)), dt, span=sp),
                         args[0].weak and args[1].weak)
        if fname == "select":
            arity(3)
            c = _cast(args[0].ir, "bool")
            dt = self.common(args[1], args[2])
            return Typed(N.Call("select", (c, self.retype(args[1], dt), self.retype(args[2], dt)), dt, span=sp),
                         args[1].weak and args[2].weak)
        if fname == "fill":
            arity(2)
            body, val = args
            if N.free_indices(val.ir):
                raise _err(SdslTypeError, "the fill value must be a scalar", e.args[1].span)
            dt = body.ir.dtype if val.weak else self.common(body, val)
            if dt != body.ir.dtype and body.weak:
                dt = self.common(body, val)
            return Typed(N.Fill(self.retype(body, dt), self.retype(val, dt), dt, span=sp), body.weak)
        raise _err(SdslNameError, f"unknown function '{fname}'", e.func.span,
                   _suggest(fname, S.FUNCTIONS + S.SCALAR_TYPES))

    def coerce_cast_literal(self, lit: N.Lit, dtype: str) -> N.Lit:
        v = lit.value
        if dtype == "bool":
            return N.Lit(bool(v), dtype, span=lit.span)
        if dtype in INT_DTYPES:
            if isinstance(v, float) and not math.isfinite(v):
                raise _err(SdslTypeError, f"{v} cannot be converted to {dtype}", lit.span)
            return N.Lit(_int_cast(v, lit.dtype, dtype), dtype, span=lit.span)
        return N.Lit(float(v), dtype, span=lit.span)

    def prefix(self, e: S.Prefix, scope: Scope, ctx: StmtCtx) -> Typed:
        op, sp = e.op, e.span
        vars_ = []
        for ix in e.indices:
            if scope.lookup(ix.id) is not None or ix.id in CONSTANT_NAMES:
                raise _err(SdslTypeError, f"'{ix.id}' is not an index variable", ix.span)
            if ix.id in vars_:
                raise _err(SdslTypeError, f"index '{ix.id}' is listed twice", ix.span)
            if ix.id in ctx.bound:
                raise _err(SdslTypeError, f"index '{ix.id}' is already reduced by an enclosing operator", ix.span)
            vars_.append(ix.id)
        single = op in ("softmax", "topk", "bottomk", "argmax", "argmin")
        if single and len(vars_) != 1:
            raise _err(SdslTypeError, f"'{op}' takes exactly one index", sp)
        if op not in ("topk", "bottomk") and (e.args or e.kwargs):
            raise _err(SdslTypeError, f"'{op}' takes no arguments", (e.args or e.kwargs)[0].span)
        reduces = op not in ("softmax", "topk", "bottomk")
        if reduces:
            ctx.bound.extend(vars_)
        try:
            body = self.expr(e.body, scope, ctx)
        finally:
            if reduces:
                del ctx.bound[len(ctx.bound) - len(vars_):]
        bfree = N.free_indices(body.ir)
        for ix in e.indices:
            if ix.id not in bfree:
                raise _err(SdslTypeError, f"index '{ix.id}' does not appear in the expression that '{op}' applies to",
                           ix.span)
        dt = body.ir.dtype
        if op in ("topk", "bottomk"):
            if len(e.args) != 1:
                raise _err(SdslTypeError, f"'{op}' takes k: write {op}[{vars_[0]}](k) e", sp)
            kctx = StmtCtx()
            k = self.expr(e.args[0], scope, kctx)
            if N.free_indices(k.ir) or kctx.uses or k.ir.dtype not in INT_DTYPES:
                raise _err(SdslTypeError, "k must be a scalar integer", e.args[0].span)
            group = None
            for kw in e.kwargs:
                if kw.name != "group":
                    raise _err(SdslTypeError, f"'{op}' has no argument '{kw.name}' (only group=)", kw.span)
                g = self.literal_value(kw.value, scope, "group")
                if g.ir.dtype not in INT_DTYPES or g.ir.value <= 0:
                    raise _err(SdslTypeError, "group must be a positive integer constant", kw.value.span)
                group = int(g.ir.value)
            if dt not in INT_DTYPES + FLOAT_DTYPES + ("bool",):
                raise _err(SdslTypeError, f"'{op}' ranks numeric values", sp)
            return Typed(N.TopK(vars_[0], _cast(k.ir, "i64"), group, op == "topk", body.ir, span=sp))
        if op == "softmax":
            ft = dt if dt in FLOAT_DTYPES else "f64"
            return Typed(N.Softmax(vars_[0], self.retype(body, ft), ft, span=sp))
        if op in ("sum", "prod"):
            rt = "i64" if dt == "bool" else dt
        elif op in ("mean", "var", "std", "logsumexp"):
            rt = dt if dt in FLOAT_DTYPES else "f64"
        elif op == "count":
            rt = "i64"
        elif op in ("any", "all"):
            rt = "bool"
        elif op in ("argmax", "argmin"):
            rt = "i64"
        else:
            rt = dt
        inner = body.ir
        if op in ("sum", "prod", "mean", "var", "std", "logsumexp") and rt != dt:
            inner = self.retype(body, rt)
        if op == "logsumexp" and len(vars_) > 1:
            # over several indices, as sum[i, j] is: log Σ_ij exp = log Σ_i exp(log Σ_j exp), each level
            # max-subtracted; an i with no entries is absent from the outer level, as it adds nothing to the sum
            for v in reversed(vars_):
                inner = N.Reduce(op, (v,), inner, rt, span=sp)
            return Typed(inner)
        return Typed(N.Reduce(op, tuple(vars_), inner, rt, span=sp))

    # ------------------------------------------------------------ masks

    def mask(self, c: S.Expr, scope: Scope, ctx: StmtCtx) -> N.Mask:
        sp = c.span
        match c:
            case S.BinOp(op="and", left=a, right=b):
                return N.MaskAnd(self.mask(a, scope, ctx), self.mask(b, scope, ctx), span=sp)
            case S.BinOp(op="or", left=a, right=b):
                return N.MaskOr(self.mask(a, scope, ctx), self.mask(b, scope, ctx), span=sp)
            case S.UnaryOp(op="not", operand=a):
                return N.MaskNot(self.mask(a, scope, ctx), span=sp)
            case S.Access():
                return N.MaskPresent(self.access(c, scope, ctx), span=sp)
            case S.Prefix(op="topk" | "bottomk"):
                return N.MaskPresent(self.expr(c, scope, ctx).ir, span=sp)
        t = self.expr(c, scope, ctx)
        if t.ir.dtype != "bool":
            raise _err(SdslTypeError, f"a where condition must be boolean, got {t.ir.dtype}", sp,
                       "a tensor access alone (M[i, j]) is a structural mask; compare values with != 0")
        return N.MaskValue(t.ir, span=sp)

    # ------------------------------------------------------------ schedules

    def computed(self, name: str, scope: Scope) -> Symbol | None:
        """The temp or output a schedule may name (one local to a repeat body too), else None."""
        sym = scope.lookup(name) or self.loop_locals.get(name)
        return sym if sym is not None and sym.kind in ("temp", "output") else None

    def check_schedule(self, item: S.Schedule, scope: Scope):
        sym = self.computed(item.target, scope)
        if sym is None:
            raise _err(SdslScheduleError, f"schedule names '{item.target}', which is not a tensor this program "
                       "computes", item.span, _suggest(item.target, list(self.defining)))
        stmts = self.defining.get(sym.ir_name, [])
        index_vars = []
        for st in stmts:
            for v, _ in st.ranges:
                if v not in index_vars:
                    index_vars.append(v)
        out = []
        for d in item.directives:
            args = d.args
            if d.name not in SCHEDULE_DIRECTIVES:
                raise _err(SdslScheduleError, f"unknown schedule directive '{d.name}'", d.span,
                           f"directives: {', '.join(SCHEDULE_DIRECTIVES)}")
            if d.name == "accumulator":
                if len(args) != 1 or args[0] not in ACCUMULATORS:
                    raise _err(SdslScheduleError, f"accumulator takes one of: {', '.join(ACCUMULATORS)}", d.span)
            elif d.name == "parallel":
                if len(args) != 1 or args[0] not in index_vars:
                    raise _err(SdslScheduleError, f"parallel takes one index of the statement defining "
                               f"'{item.target}' ({', '.join(index_vars)})", d.span)
            elif d.name == "block":
                if len(args) != 2 or args[0] not in index_vars or not isinstance(args[1], int) or args[1] <= 0:
                    raise _err(SdslScheduleError, "block takes an index and a positive tile size (block i 64)",
                               d.span)
            elif d.name == "order":
                if sorted(map(str, args)) != sorted(index_vars):
                    raise _err(SdslScheduleError, f"order must list every index of the statement defining "
                               f"'{item.target}' once: {', '.join(index_vars)}", d.span)
            elif d.name == "format":
                if not args or args[0] not in S.FORMATS:
                    raise _err(SdslScheduleError, f"format takes one of: {', '.join(S.FORMATS)}", d.span)
                if sym.kind == "output":
                    raise _err(SdslScheduleError, f"the format of output '{item.target}' is given by its type; "
                               "format applies to intermediates", d.span)
                name, nparams = str(args[0]), FORMAT_NPARAMS[str(args[0])]
                if len(args) - 1 != nparams:
                    raise _err(SdslScheduleError, f"format {name} takes {nparams} parameter"
                               f"{'s' if nparams != 1 else ''}, got {len(args) - 1}", d.span)
                params = tuple(self.resolve_dim(a, scope, False, d.span, f"schedule {item.target}")
                               for a in args[1:])
                fmt = _checked_format(name, params, d.span, SdslScheduleError)
                if FORMAT_RANKS[fmt.name] and sym.type.rank not in FORMAT_RANKS[fmt.name]:
                    raise _err(SdslScheduleError, f"format {fmt} does not fit '{item.target}' of rank "
                               f"{sym.type.rank}", d.span)
                # the storage only: a schedule never changes a result (spec § 8), so presence stays exact
                self.update_decl(sym.ir_name, storage=fmt)
            elif d.name == "fuse":
                named = []
                for a in args:
                    s2 = self.computed(str(a), scope)
                    if s2 is None:
                        raise _err(SdslScheduleError, f"fuse names '{a}', which is not a tensor this program "
                                   "computes", d.span)
                    named.append(s2.ir_name)
                # the fusion pass works on IR names
                args = named
            out.append(N.ScheduleDirective(d.name, tuple(args), span=d.span))
        self.schedules.append(N.Schedule(sym.ir_name, tuple(out), span=item.span))

    def finalize_outputs(self, scope: Scope):
        for i, d in enumerate(self.decls):
            if d.kind == "output":
                sym = scope.lookup(d.name)
                self.decls[i] = replace(d, type=sym.type)


# ---------------------------------------------------------------- helpers

def S_text(e: S.Expr) -> str:
    try:
        from sparsedsl.frontend.printer import format_expr
        return format_expr(e)
    except Exception:  # the printer is only used to quote the user's text in a message
        return type(e).__name__


def _checked_format(name: str, params: tuple[Dim, ...], span, error) -> Format:
    """``name(params)`` once its parameters are known to be sensible (positive; nm's N at most M)."""
    for p in params:
        if isinstance(p, int) and p <= 0:
            raise _err(error, f"format parameters must be positive, got {p}", span)
    if name == "nm" and all(isinstance(p, int) for p in params) and params[0] > params[1]:
        raise _err(error, f"nm({params[0]}, {params[1]}): N must not exceed M", span)
    return Format(name, params)


def _adopt(weak: str, strong: str) -> str:
    """A literal's dtype next to a typed operand: an int literal adopts any numeric type, a float literal any
    float type (an integer operand with a float literal gives f64, as numpy does)."""
    if weak == "bool":
        return strong
    if weak in INT_DTYPES:
        return "i64" if strong == "bool" else strong
    return strong if strong in FLOAT_DTYPES else "f64"


def _cast(e: N.Expr, dtype: str) -> N.Expr:
    return e if e.dtype == dtype else N.Cast(e, dtype, span=e.span)


def _lookup_ir(scope: Scope, ir_name: str) -> Symbol | None:
    s: Scope | None = scope
    while s is not None:
        for sym in s.symbols.values():
            if sym.ir_name == ir_name:
                return sym
        s = s.parent
    return None


def _targets(items):
    for it in items:
        if isinstance(it, S.Assign):
            yield it.target
        elif isinstance(it, S.Repeat):
            yield from _targets(it.body)


def _mentions_whole(e: S.Expr, scope: Scope) -> bool:
    match e:
        case S.Name(id=name):
            sym = scope.lookup(name)
            return sym is not None and sym.type is not None and bool(sym.type.rank) and sym.kind not in (
                "size", "const")
        case S.Access(indices=ix):
            return any(_mentions_whole(i, scope) for i in ix if not isinstance(i, S.Name))
        case S.BinOp(left=a, right=b):
            return _mentions_whole(a, scope) or _mentions_whole(b, scope)
        case S.UnaryOp(operand=a):
            return _mentions_whole(a, scope)
        case S.Call(args=args):
            return any(_mentions_whole(a, scope) for a in args)
        case S.Prefix(body=b):
            return _mentions_whole(b, scope)
        case S.Where(value=v, cond=c):
            return _mentions_whole(v, scope) or _mentions_whole(c, scope)
    return False


def _i64_literal(v: int, span) -> int:
    """An integer literal: i64, so one past its range is an error rather than a wrapped or failing value."""
    if not -(1 << 63) <= v < (1 << 63):
        raise _err(SdslTypeError, f"integer literal {v} does not fit in i64", span,
                   "write it as a float (1e30) if that is what is meant")
    return v


def _int_cast(v, src: str, dtype: str) -> int:
    """A finite scalar of dtype ``src`` converted to the integer ``dtype`` as the targets convert at run time
    (numpy's ``astype``): ``i8(300)`` is 44."""
    import numpy as np

    from sparsedsl.tensor_ir.types import NUMPY_DTYPE

    with np.errstate(all="ignore"):
        return np.asarray(v, dtype=NUMPY_DTYPE[src]).astype(NUMPY_DTYPE[dtype]).item()


def fold(e: N.Expr):
    """Constant-fold a scalar expression of literals; None when it is not constant."""
    import numpy as np

    from sparsedsl.tensor_ir.types import NUMPY_DTYPE

    match e:
        case N.Lit(value=v):
            return v
        case N.Cast(operand=a, dtype=dt):
            v = fold(a)
            if v is None:
                return None
            if dt == "bool":
                return bool(v)
            if dt in INT_DTYPES:
                return _int_cast(v, a.dtype, dt) if math.isfinite(v) else None
            return float(v)
        case N.Unary(op="-", operand=a):
            v = fold(a)
            return None if v is None else -v
        case N.Unary(op="not", operand=a):
            v = fold(a)
            return None if v is None else (not v)
        case N.Binary(op=op, lhs=a, rhs=b, dtype=dt):
            x, y = fold(a), fold(b)
            if x is None or y is None:
                return None
            with np.errstate(all="ignore"):
                xa = np.asarray(x, dtype=NUMPY_DTYPE[a.dtype])
                ya = np.asarray(y, dtype=NUMPY_DTYPE[b.dtype])
                fn = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide,
                      "//": np.floor_divide, "%": np.mod, "<": np.less, "<=": np.less_equal, ">": np.greater,
                      ">=": np.greater_equal, "==": np.equal, "!=": np.not_equal, "&": np.bitwise_and,
                      "|": np.bitwise_or, "and": np.logical_and, "or": np.logical_or}.get(op)
                if fn is None:
                    return None
                r = fn(xa, ya).astype(NUMPY_DTYPE[dt])
            return r.item()
    return None


# ---------------------------------------------------------------- entry points

def check_module(module: S.Module, loader=None, path: str | None = None) -> N.Program:
    """Check a parsed program and return its tensor IR (defs inlined, sugar removed)."""
    path = path if path is not None else (module.name if not module.name.startswith("<") else None)
    return Checker(loader, path).check_program(module)


def check_function(module: S.Module, name: str, loader=None, path: str | None = None) -> N.Program:
    """Turn def ``name`` of a module into a program: its params become inputs, its result the output ``out``."""
    path = path if path is not None else (module.name if not module.name.startswith("<") else None)
    fn = next((it for it in module.body if isinstance(it, S.FuncDef) and it.name == name), None)
    if fn is None:
        defs = [it.name for it in module.body if isinstance(it, S.FuncDef)]
        raise SdslNameError(f"no def named '{name}' in {module.name}", module.body[0].span if module.body else None,
                            notes=tuple(x for x in (_suggest(name, defs),) if x))
    keep = tuple(it for it in module.body if isinstance(it, (S.FuncDef, S.Import, S.FromImport)))
    taken = {p.name for p in fn.params} | {it.name for it in keep if isinstance(it, S.FuncDef)}
    out_name = NameSupply(taken).fresh("out")
    decls = tuple(S.InputDecl(p.name, p.type, span=p.span) for p in fn.params)
    out = S.OutputDecl(out_name, fn.result, span=fn.span)
    call = S.Assign(out_name, None, "=",
                    S.Call(S.Name(name, span=fn.span), tuple(S.Name(p.name, span=p.span) for p in fn.params),
                           span=fn.span), span=fn.span)
    return Checker(loader, path).check_program(S.Module(keep + decls + (out, call), name=module.name))
