"""The ``sparsedsl`` command (interface.md): check, compile, run, sim, explain, demo.

Exit status: 0 success; 1 a user error, printed as ``FILE:LINE:COL: error: ...`` with the source line and a
caret; 2 bad command-line usage (argparse). An exception that is not an ``SdslError`` is a bug in sparsedsl:
it is reported in one line with exit status 3, and ``--debug`` shows its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path

from sparsedsl import api
from sparsedsl.core.errors import SdslError, SdslInputError, SdslTargetError, located

EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EMIT_KINDS = ("ast", "ir", "loops", "code")
DEMO_PROGRAM = "triangles.sdsl"
DEMO_MATRIX = "ego-Facebook.mtx.gz"
DEMO_ANSWER = 1_612_010  # triangles of ego-Facebook, each once (SNAP; see sparsedsl/data/README.md)


# ---------------------------------------------------------------- argument helpers

def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _size(text: str) -> tuple[str, int]:
    name, value = _assignment(text)
    try:
        n = int(value, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"a size must not be negative, got {text!r}")
    return name, n


def _read_inputs(program: api.Program, assignments, size_overrides) -> dict:
    """Turn ``--input NAME=VALUE`` strings into values; ``random:SEED`` inputs are read last, once the other
    inputs have fixed the sizes they need."""
    from sparsedsl.runtime.io import read_value

    decls = {d.name: d for d in program.inputs}
    given: dict[str, str] = {}
    for name, text in assignments or ():
        if name not in decls:
            known = ", ".join(decls) or "none"
            # located at the input declarations, where the valid names are
            first = next(iter(decls.values()), None)
            raise SdslInputError(f"{program.name} has no input named '{name}' (inputs: {known})",
                                 first.span if first is not None else program.ir().program.span)
        if name in given:
            raise SdslInputError(f"input '{name}' is given twice", decls[name].span)
        given[name] = text
    sizes: dict[str, int] = {}
    fixed_by: dict[str, object] = {}
    values = {}
    overrides = dict(size_overrides or ())
    ordered = sorted(given.items(), key=lambda kv: kv[1].startswith("random:"))
    for name, text in ordered:
        decl = decls[name]
        with located(decl.span):  # an input's errors are reported at its declaration
            value = read_value(text, decl, sizes, overrides)
        values[name] = value
        _note_sizes(decl, value, sizes, fixed_by)
    _check_size_overrides(program, overrides, sizes, fixed_by)
    return values


def _check_size_overrides(program: api.Program, overrides: dict, sizes: dict, fixed_by: dict) -> None:
    """``--size`` names a size of the program that no input given fixes otherwise. A wrong one is reported at
    the declaration of the input that fixes the size, or at the program's first declaration."""
    if not overrides:
        return
    ir = program.ir().program
    known = set(ir.sizes) | {d for decl in ir.decls for d in decl.type.shape if isinstance(d, str)}
    for name, value in overrides.items():
        if name not in known:
            raise SdslInputError(f"--size {name}={value}: {program.name} has no size named '{name}' "
                                 f"(sizes: {', '.join(sorted(known)) or 'none'})", ir.span)
        if name in sizes and sizes[name] != value:
            raise SdslInputError(f"--size {name}={value}, but input {fixed_by[name].name} fixes {name} = "
                                 f"{sizes[name]}", fixed_by[name].span)


def _note_sizes(decl, value, sizes: dict, fixed_by: dict) -> None:
    """Record the size names that ``value`` fixes (and the declaration fixing each), so that later ``random:``
    inputs can use them."""
    shape = getattr(value, "shape", None)
    if shape is None:
        return
    for dim, extent in zip(decl.type.shape, tuple(shape)):
        if isinstance(dim, str) and dim not in sizes:
            sizes[dim] = int(extent)
            fixed_by[dim] = decl


def _entries(tensor) -> int:
    nnz = getattr(tensor, "nnz", None)
    if nnz is not None:
        return int(nnz)
    _values, present = tensor.to_presence()
    return int(present.sum())


def _describe(name: str, tensor) -> str:
    shape = tuple(tensor.shape)
    shape_text = "x".join(str(s) for s in shape) if shape else "scalar"
    n = _entries(tensor)
    line = (f"{name}: shape {shape_text}, format {tensor.format}, dtype {tensor.dtype}, "
            f"{n} stored {'entry' if n == 1 else 'entries'}")
    if not shape:
        values, present = tensor.to_presence()
        line += f", value {values.item() if bool(present) else 'absent'}"
    return line


# ---------------------------------------------------------------- commands

def cmd_check(args) -> int:
    status = EXIT_OK
    for file in args.files:
        try:
            api.load(file)
        except SdslError as err:
            print(err.render(), file=sys.stderr)
            status = EXIT_USER
    return status


def _emit(kernel: api.Kernel, program: api.Program, kind: str) -> str:
    if kind == "ast":
        from sparsedsl.frontend.printer import format_module

        return format_module(program.module)
    if kind == "ir":
        return str(program.ir())
    emits = getattr(api.backend_module(kernel.target), "EMITS", ())
    if kind not in emits:
        what = "loop IR" if kind == "loops" else "generated code"
        raise SdslTargetError(
            f"target '{kernel.target}' has no {what} yet: it interprets the tensor IR directly (use --emit ir)")
    return kernel.executable.loops if kind == "loops" else kernel.executable.source


def _output_folder(text: str, flag: str, span=None) -> Path:
    """The folder ``flag`` names, created if missing; a path that cannot be one is the user's error, reported
    at ``span`` (the program's first output, what the folder is for)."""
    folder = Path(text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = "it is a file" if folder.is_file() else (err.strerror or type(err).__name__).lower()
        raise SdslError(f"{flag} {text}: cannot use it as the output folder: {reason}", span) from None
    return folder


@contextlib.contextmanager
def _writing(folder: Path, span=None):
    """Writing into ``folder``: a full disk or a folder without write permission is reported (at ``span``, the
    declaration of what is written), not a crash."""
    try:
        yield
    except OSError as err:
        raise SdslError(f"cannot write into {folder}: {(err.strerror or type(err).__name__).lower()}"
                        + (f" ({err.filename})" if err.filename else ""), span) from None


def cmd_compile(args) -> int:
    program = api.load(args.file)
    kernel = program.compile(args.target)
    if args.emit:
        text = _emit(kernel, program, args.emit)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if args.output_dir is not None:
        if "artifact" not in getattr(api.backend_module(args.target), "EMITS", ()):
            raise SdslTargetError(
                f"target '{args.target}' produces no artifact to write: it interprets the tensor IR directly")
        span = program.ir().program.span
        folder = _output_folder(args.output_dir, "-o", span)
        with _writing(folder, span):
            written = kernel.executable.write(folder)
        for path in written:
            print(f"wrote {path}")
    return EXIT_OK


def _run_and_report(args, program: api.Program, compile_for) -> int:
    """``compile_for(values)``: the kernel to run on the inputs read from the command line."""
    from sparsedsl.runtime.io import write_output

    values = _read_inputs(program, args.input, args.size)
    kernel = compile_for(values)
    start = time.perf_counter()
    results = kernel.run_tensors(**values)
    run_seconds = time.perf_counter() - start
    jit_seconds = 0.0
    if args.time and kernel.target != "ref":
        # A compiled target's machine code is made (or loaded from the cache) at the first call, for the
        # types it is called with: run again, so that run time is the program's and that work is compile time.
        start = time.perf_counter()
        results = kernel.run_tensors(**values)
        again = time.perf_counter() - start
        jit_seconds, run_seconds = max(run_seconds - again, 0.0), again
    declared = {d.name: d.span for d in program.outputs}
    first = next(iter(declared.values()), None)
    folder = _output_folder(args.output, "--output", first) if args.output is not None else None
    for name, tensor in results.items():
        print(_describe(name, tensor))
        if folder is not None:
            with _writing(folder, declared.get(name, first)):
                write_output(folder, name, tensor)
    if args.time:
        jit = f" (of which {jit_seconds * 1e3:.1f} ms at the first call)" if kernel.target != "ref" else ""
        print(f"compile time: {(kernel.compile_seconds + jit_seconds) * 1e3:.1f} ms{jit}")
        print(f"run time: {run_seconds * 1e3:.1f} ms")
    return EXIT_OK


def cmd_run(args) -> int:
    program = api.load(args.file)
    # the inputs are known before compiling: their statistics guide format selection (compile(like=...))
    return _run_and_report(args, program, lambda values: program.compile(args.target, like=values))


def cmd_sim(args) -> int:
    program = api.load(args.file)
    # Ask for the target before reading any input: without it there is nothing to simulate.
    with located(program.ir().program.span):
        api.backend_module("piuma")
    options = {}
    if args.config is not None:
        options["config"] = str(args.config)
    if args.set:
        options["set"] = dict(args.set)
    kernel = program.compile("piuma", **options)
    status = _run_and_report(args, program, lambda values: kernel)
    if args.report is not None:
        kernel.executable.write_report(Path(args.report))
    if args.plot is not None:
        kernel.executable.write_plot(Path(args.plot))
    return status


def cmd_explain(args) -> int:
    program = api.load(args.file)
    values = _read_inputs(program, args.input, args.size)
    print(program.explain(**values))
    return EXIT_OK


def cmd_demo(args) -> int:
    from importlib import resources

    import scipy.io

    data = resources.files("sparsedsl.data")
    program = api.loads(data.joinpath(DEMO_PROGRAM).read_text(encoding="utf-8"), name=DEMO_PROGRAM)
    with resources.as_file(data.joinpath(DEMO_MATRIX)) as path:
        graph = scipy.io.mmread(path).tocsr()
    print(f"sparsedsl demo: triangle counting on {DEMO_MATRIX.removesuffix('.mtx.gz')} "
          f"({graph.shape[0]} vertices, {graph.nnz} stored entries), target {args.target}")
    print("program:")
    for line in data.joinpath(DEMO_PROGRAM).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            print("    " + line)
    start = time.perf_counter()
    kernel = program.compile(args.target)
    out = kernel(A=graph)
    seconds = time.perf_counter() - start
    count = int(out["triangles"])
    verdict = "matches" if count == DEMO_ANSWER else "DOES NOT MATCH"
    print(f"triangles: {count:,} ({verdict} the published count {DEMO_ANSWER:,}) in {seconds:.2f} s")
    return EXIT_OK if count == DEMO_ANSWER else EXIT_INTERNAL


# ---------------------------------------------------------------- parser

def _add_io(p: argparse.ArgumentParser, output: bool = True) -> None:
    p.add_argument("--input", metavar="NAME=VALUE", type=_assignment, action="extend", nargs="+",
                   help="an input: a file (.mtx, .mtx.gz, .npy, .npz, .el, .txt), a scalar literal, "
                        "or random:SEED (shape from the other inputs and --size)")
    p.add_argument("--size", metavar="N=INT", type=_size, action="extend", nargs="+",
                   help="a size that no input fixes (for random: inputs)")
    if output:
        p.add_argument("--output", metavar="DIR", help="write each output to DIR/NAME.mtx (sparse) or .npy (dense)")
        p.add_argument("--time", action="store_true",
                       help="print compile time and run time (a compiled target runs twice: its first call makes "
                            "or loads the machine code, which counts as compile time)")


def build_parser() -> argparse.ArgumentParser:
    from sparsedsl import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show Python tracebacks of internal errors")
    parser = argparse.ArgumentParser(
        prog="sparsedsl", parents=[common],
        description="A declarative language and compiler for graph-centric sparse computation.",
        epilog="Run 'sparsedsl COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"sparsedsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", parents=[common], help="parse and type-check; no output on success",
                       description="Parse and type-check each FILE; print nothing on success.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("compile", parents=[common], help="compile for a target; print a stage or write the artifact",
                       description="Compile FILE for a target. --emit prints one stage; -o writes the generated "
                                   "artifact (a stand-alone module for numba/triton, the trace for piuma).")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--target", required=True, choices=api.TARGETS)
    p.add_argument("--emit", choices=EMIT_KINDS, help="print the AST, the tensor IR, the loop IR or the code")
    p.add_argument("-o", dest="output_dir", metavar="DIR", help="write the generated artifact to DIR")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", parents=[common], help="run a program on inputs",
                       description="Run FILE; print each output's shape, format and stored entries.")
    p.add_argument("file", metavar="FILE")
    # interface.md's synopsis: `run FILE [--target numba]`; the interpreter (`ref`) stores every tensor dense
    p.add_argument("--target", default="numba", choices=api.TARGETS, help="default: numba")
    _add_io(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sim", parents=[common], help="run a program on the PIUMA simulator",
                       description="Simulate FILE on PIUMA; outputs are written as 'run' writes them.")
    p.add_argument("file", metavar="FILE")
    _add_io(p)
    p.add_argument("--config", metavar="FILE.toml", help="simulator parameters")
    p.add_argument("--set", metavar="KEY=VALUE", type=_assignment, action="extend", nargs="+",
                   help="override one simulator parameter")
    p.add_argument("--report", metavar="FILE.json", help="write the simulation report")
    p.add_argument("--plot", metavar="FILE.png", help="plot the simulation")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("explain", parents=[common], help="show the compiler's decisions and why",
                       description="Print every value's type and storage format and the reason for it; "
                                   "with inputs, also the sizes they bind.")
    p.add_argument("file", metavar="FILE")
    _add_io(p, output=False)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", parents=[common], help="run a bundled program on bundled real data",
                       description="Count the triangles of the ego-Facebook graph (bundled) and compare with "
                                   "the published count.")
    p.add_argument("--target", default="numba", choices=api.TARGETS, help="default: numba")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except SdslError as err:
        if debug:
            traceback.print_exc()
        print(err.render(), file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in sparsedsl, never a user error
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for a traceback)"
        print(f"internal error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
