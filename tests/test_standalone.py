"""The module `sparsedsl compile --target numba -o DIR` writes, used where sparsedsl is not installed.

interface.md: "a Python module that imports only numpy/numba ... and runs without sparsedsl installed". Each
program is compiled here; its module runs in a child process in which importing sparsedsl fails; the child
calls ``compute(**inputs)`` (inputs by name, backends/numba/standalone.py) and pickles what it got, which is
compared with the reference interpreter's answer on the same inputs.
"""
from __future__ import annotations

import ast
import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsedsl as sd
from conftest import EXAMPLES
from sparsedsl.backends.numba import KERNEL_DTYPE
from sparsedsl.backends.numba.standalone import KERNEL_NAMES, OUTPUT_NAMES
from sparsedsl.tensor_ir.types import NUMPY_DTYPE

# the bundled example: csr<bool>, three dense f32 factors, an f32 scale with a default, a dense output
ATTENTION = (EXAMPLES / "graph_attention.sdsl").read_text()

# rank-1 sparse in and out, a bsr f16 input converted to rows, a csc integer input, a coo output, a scalar
FORMATS = """
input  A: csr<f64>[N, N]
input  x: csr<f64>[N]
input  B: bsr(2,2)<f16>[N, N]
input  C: csc<i32>[N, N]
output y: csr<f64>[N]
output z: dense<f64>[N]
output M: coo<f64>[N, N]
output t: i64
y[i] = sum[j] A[i, j] * x[j]
z[i] = sum[j] f64(B[i, j]) * f64(C[j, i])
M[i, j] = A[i, j] + f64(B[i, j])
t = sum[i, j] C[i, j]
"""

# bsr and csc walked in their own layouts (block rows, columns), a bf16 dense input, a sparse SpGEMM output
LAYOUTS = """
input  B: bsr(2,2)<f32>[N, N]
input  C: csc<f64>[N, K]
input  X: dense<bf16>[N, F]
output Y: dense<f32>[N, F]
output w: dense<f64>[K]
output P: csr<f64>[N, N]
Y[i, f] = sum[j] B[i, j] * f32(X[j, f])
w[k] = sum[i] C[i, k]
P[i, j] = sum[k] f64(B[i, k]) * f64(B[k, j])
"""


# non-finite defaults and fill: the module's tables must spell them as Python (float('inf'), not inf)
LIMITS = """
input  A: csr<f64>[N, N]
input  cap: f64 = inf
input  floor: f64 = -inf
output low: dense<f64>[N] fill inf
output D: dense<f64>[N, N] fill -inf
low[i] = min[j] min(A[i, j], cap)
D[i, j] = max(A[i, j], floor)
"""


def _unsorted_with_duplicates(n: int, m: int, nnz: int, seed: int, dtype) -> sp.csr_array:
    """A csr whose rows are unsorted and hold duplicate columns, as scipy leaves a coo's conversion unsummed."""
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, n, nnz), rng.integers(0, m, nnz)
    data = rng.integers(1, 4, nnz).astype(dtype) if np.dtype(dtype).kind in "iub" else rng.standard_normal(nnz).astype(dtype)
    rows, cols = np.concatenate([rows, rows[:5]]), np.concatenate([cols, cols[:5]])
    data = np.concatenate([data, data[:5]])
    order = rng.permutation(rows.size)
    ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    by_row = np.argsort(rows[order], kind="stable")
    return sp.csr_array((data[order][by_row], cols[order][by_row].astype(np.int32), ptr), shape=(n, m))


def _cases():
    rng = np.random.default_rng(7)
    n = 30
    G = _unsorted_with_duplicates(n, n, 120, 1, np.bool_)
    att = dict(G=G, Q=rng.standard_normal((n, 16)).astype(np.float32),
               K=rng.standard_normal((n, 16)).astype(np.float32),
               V=rng.standard_normal((n, 16)).astype(np.float64))  # f64 V is cast (same_kind) to f32
    fmt = dict(A=_unsorted_with_duplicates(n, n, 90, 2, np.float64),
               x=sp.coo_array(np.where(rng.random(n) < 0.4, rng.standard_normal(n), 0.0)),
               B=sp.random_array((n, n), density=0.1, format="bsr", random_state=3).astype(np.float32),
               C=_unsorted_with_duplicates(n, n, 80, 4, np.int32).tocsc())
    B = sp.random_array((n, n), density=0.1, format="csr", random_state=5).astype(np.float32).tobsr((2, 2))
    lay = dict(B=B, C=sp.random_array((n, 12), density=0.2, format="csc", random_state=6),
               X=rng.standard_normal((n, 5)))  # float64 for a bf16 input: rounded to bf16's grid
    lim = dict(A=_unsorted_with_duplicates(n, n, 40, 7, np.float64))  # many empty rows: low is inf there
    return {"attention": (ATTENTION, att), "formats": (FORMATS, fmt), "layouts": (LAYOUTS, lay),
            "limits": (LIMITS, lim)}


CHILD = """
import pickle, sys, importlib.util
sys.modules["sparsedsl"] = None          # not installed, as far as the module can tell
if {block_scipy}:
    sys.modules["scipy"] = None
jobs = pickle.load(open(sys.argv[1], "rb"))

def arrays(inputs):
    # every array an input holds (scipy caches flags such as _has_canonical_format when read: not a change)
    import numpy as np
    out = []
    for v in inputs.values():
        for a in (vars(v).values() if hasattr(v, "__dict__") else [v]):
            if isinstance(a, np.ndarray):
                out.append(a.copy())
    return out

def same(a, b):
    import numpy as np
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))

results = {{}}
for name, (path, inputs, bad) in jobs.items():
    spec = importlib.util.spec_from_file_location("k_" + name, path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    if inputs is not None:
        before = arrays(inputs)
        results[name] = m.compute(**inputs)
        results[name + ":unchanged"] = same(arrays(inputs), before)
    errors = []
    for call in bad:
        try:
            m.compute(**call)
            errors.append(None)
        except (TypeError, ValueError) as e:
            errors.append((type(e).__name__, str(e)))
    results[name + ":errors"] = errors
pickle.dump(results, open(sys.argv[2], "wb"))
"""


def _run_child(tmp_path: Path, jobs: dict, block_scipy: bool = False) -> dict:
    (tmp_path / "jobs.pkl").write_bytes(pickle.dumps(jobs))
    proc = subprocess.run([sys.executable, "-c", CHILD.format(block_scipy=block_scipy), "jobs.pkl", "out.pkl"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pickle.loads((tmp_path / "out.pkl").read_bytes())


def _write(tmp_path: Path, name: str, source: str) -> Path:
    folder = tmp_path / name
    sd.loads(source, name=name).compile(target="numba").executable.write(folder)
    return folder / "kernel_numba.py"


def _assert_same(got, want, what):
    if sp.issparse(want):
        assert sp.issparse(got), what
        assert got.format == want.format and got.shape == want.shape and got.dtype == want.dtype, what
        got, want = got.toarray(), want.toarray()
    else:
        assert type(got) is type(want) or np.asarray(got).dtype == np.asarray(want).dtype, what
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                               rtol=2e-5, atol=1e-6, err_msg=what)


def test_the_tables_of_dtypes_agree_with_the_backends():
    for dtype, kernel in KERNEL_NAMES.items():
        assert np.dtype(kernel) == KERNEL_DTYPE[dtype]
        assert np.dtype(OUTPUT_NAMES[dtype]) == NUMPY_DTYPE[dtype]


def test_the_module_imports_only_numpy_and_numba(tmp_path):
    path = _write(tmp_path, "attention", ATTENTION)
    top = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module.split(".")[0])
    assert top <= {"math", "sys", "threading", "numba", "numpy"}, top


def test_compute_takes_inputs_by_name_and_matches_the_reference(tmp_path):
    cases = _cases()
    bad_attention = [
        dict(cases["attention"][1], H=1),                                  # an unknown input
        {k: v for k, v in cases["attention"][1].items() if k != "Q"},     # a missing one
        dict(cases["attention"][1], Q=np.ones((31, 16), np.float32)),     # N = 31 against G's 30
        dict(cases["attention"][1], scale="x"),                           # not a number
        dict(cases["attention"][1], G={"not": "a matrix"}),               # numpy reads it as an object
    ]
    bad_formats = [dict(cases["formats"][1], C=cases["formats"][1]["C"].astype(np.float64))]  # float for i32
    jobs = {name: (str(_write(tmp_path, name, source)), inputs,
                   {"attention": bad_attention, "formats": bad_formats}.get(name, []))
            for name, (source, inputs) in cases.items()}
    got = _run_child(tmp_path, jobs)
    for name, (source, inputs) in cases.items():
        want = sd.loads(source, name=name).compile(target="ref")(**inputs)
        assert set(got[name]) == set(want.keys())
        for out in want.keys():
            _assert_same(got[name][out], want[out], f"{name}: {out}")
        assert got[name + ":unchanged"], f"{name}: compute() modified an input"
    kinds = [e and e[0] for e in got["attention:errors"]]
    assert kinds == ["TypeError", "TypeError", "ValueError", "TypeError", "TypeError"], got["attention:errors"]
    assert "input 'G'" in got["attention:errors"][4][1]
    assert "unknown input 'H'" in got["attention:errors"][0][1]
    assert "missing input 'Q'" in got["attention:errors"][1][1]
    assert "N = 31" in got["attention:errors"][2][1]
    assert got["formats:errors"][0][0] == "TypeError" and "i32" in got["formats:errors"][0][1]


def test_without_scipy_sparse_outputs_are_their_arrays(tmp_path):
    source = """
input  A: csr<f32>[N, M]
input  s: f32 = 2
output C: csr<f32>[N, M]
C[i, j] = s * A[i, j] where A[i, j] > 0
"""
    A = np.array([[0, 1.5, -2], [0, 0, 0], [3, 0, 4]], dtype=np.float32)
    got = _run_child(tmp_path, {"scale": (str(_write(tmp_path, "scale", source)), {"A": A}, [])},
                     block_scipy=True)["scale"]["C"]
    ptr, idx, data, shape = got
    assert shape == (3, 3)
    C = sp.csr_array((data, idx, ptr), shape=shape)
    want = sd.loads(source, name="scale").compile(target="ref")(A=sp.csr_array(A))["C"]
    _assert_same(C, want, "C")


def test_blockdiag_and_nm_inputs_are_refused_by_name(tmp_path):
    source = """
input  A: nm(2,4)<f32>[N, N]
input  X: dense<f32>[N, F]
output Y: dense<f32>[N, F]
Y[i, f] = sum[j] A[i, j] * X[j, f]
"""
    call = {"A": sp.csr_array(np.eye(8, dtype=np.float32)), "X": np.ones((8, 2), np.float32)}
    got = _run_child(tmp_path, {"nm": (str(_write(tmp_path, "nm", source)), None, [call])})
    assert got["nm:errors"][0][0] == "TypeError" and "input 'A' is nm" in got["nm:errors"][0][1]


def test_a_module_loaded_by_path_without_a_name_runs_again_in_the_next_process(tmp_path):
    """Numba's disk cache records a function's module by name and imports it again to load a parallel kernel;
    a module executed from a spec without a sys.modules entry has no importable name, so its entries would
    crash every later process ("No module named '<dynamic>'"). Such a load compiles without the cache."""
    path = _write(tmp_path, "spgemm", (EXAMPLES / "spgemm.sdsl").read_text())
    A = sp.random_array((30, 20), density=0.2, format="csr", random_state=8).astype(np.float32)
    B = sp.random_array((20, 25), density=0.2, format="csr", random_state=9).astype(np.float32)
    script = (
        "import pickle, sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('by_path', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "A, B = pickle.load(open('in.pkl', 'rb'))\n"
        "pickle.dump(m.compute(A=A, B=B)['C'], open('out.pkl', 'wb'))\n"
    )
    (tmp_path / "in.pkl").write_bytes(pickle.dumps((A, B)))
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        C = pickle.loads((tmp_path / "out.pkl").read_bytes())
        np.testing.assert_allclose(C.toarray(), (A @ B).toarray(), rtol=1e-5, atol=1e-6)
    assert not list(path.parent.glob("__pycache__/*.nbi"))


def test_canonical_rows_are_taken_as_they_are_and_others_are_put_in_order(tmp_path):
    """compute() checks a scipy csr's order itself (O(nnz)) and sorts only when it must."""
    path = _write(tmp_path, "spgemm", (EXAMPLES / "spgemm.sdsl").read_text())
    spec = importlib.util.spec_from_file_location("standalone_rows", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)  # nothing is JIT-compiled until a kernel is called

    def csr(ptr, idx, n=3, m_=6):
        data = np.arange(1.0, len(idx) + 1)
        return sp.csr_array((data, np.array(idx, dtype=np.int32), np.array(ptr, dtype=np.int32)), shape=(n, m_))

    falling_between_rows = csr([0, 2, 2, 4], [1, 5, 0, 3])   # row 2 starts below row 0's end; row 1 empty
    got = m._canonical_csr(falling_between_rows)
    assert got is not None and got[0] is falling_between_rows.indptr and got[1] is falling_between_rows.indices
    assert m._canonical_csr(csr([0, 0, 0, 0], [])) is not None
    for bad in (csr([0, 2, 2, 4], [5, 1, 0, 3]),        # unsorted inside row 0
                csr([0, 2, 2, 4], [1, 1, 0, 3]),        # a duplicate in row 0
                csr([0, 2, 2, 4], [1, 5, 3, 3])):       # a duplicate in the last row
        assert m._canonical_csr(bad) is None
        ptr, cols, data, shape = m._rows("A", bad, "f64")
        want = bad.copy()
        want.sum_duplicates()
        np.testing.assert_array_equal(ptr, want.indptr)
        np.testing.assert_array_equal(cols, want.indices)
        np.testing.assert_array_equal(data, want.data)


def _corrupted(make, field: str, position: int, value: int):
    """A scipy value whose index array ``field`` was changed in place after construction: scipy checks its
    structure when it builds one, not later, and its conversions (tocoo, toarray) trust what they find."""
    m = make()
    getattr(m, field)[position] = value
    return m


def test_corrupted_scipy_structure_is_refused_before_scipy_or_a_kernel_reads_it(tmp_path):
    """A falling indptr or an index past the end made scipy's own conversions write out of bounds inside
    compute(): 'double free or corruption' for a csr input, a silently wrong dense matrix for a dense one."""
    source = """
input  X: dense<f64>[N, N]
input  A: csr<f64>[N, N]
input  v: csr<f64>[N]
output y: dense<f64>[N]
y[i] = sum[j] (X[i, j] + A[i, j]) * v[j]
"""
    eye = np.eye(4)
    good = {"X": eye, "A": sp.csr_array(eye), "v": sp.csr_array(np.ones((1, 4)))}
    csr = lambda: sp.csr_array(eye)  # noqa: E731
    bad = [
        ("X", _corrupted(csr, "indptr", 2, 10), "indptr decreases at position 3 (10 -> 3)"),
        ("X", _corrupted(lambda: sp.coo_array(eye), "col", 2, 50), "coordinate of dimension 1 is out of range"),
        ("A", _corrupted(csr, "indptr", 2, 10), "indptr decreases at position 3"),
        ("A", _corrupted(csr, "indptr", 4, 9), "indptr runs from 0 to 9"),
        ("A", _corrupted(csr, "indices", 1, -3), "column index is out of range [0, 4)"),
        ("A", _corrupted(lambda: sp.csc_array(eye), "indptr", 2, 10), "csc indptr decreases"),
        ("A", _corrupted(lambda: sp.csc_array(eye), "indices", 1, 70), "row index is out of range"),
        ("A", _corrupted(lambda: sp.bsr_array(eye, blocksize=(2, 2)), "indices", 1, 7),
         "block column index is out of range [0, 2)"),
        ("A", _corrupted(lambda: sp.coo_array(eye), "row", 0, -1), "coordinate of dimension 0 is out of range"),
        ("v", _corrupted(lambda: sp.csr_array(np.ones((1, 4))), "indices", 3, 4), "column index is out of range"),
        ("v", _corrupted(lambda: sp.csr_array(np.ones(4)), "indptr", 1, 7), "indptr runs from 0 to 7"),
    ]
    job = (str(_write(tmp_path, "corrupt", source)), good, [dict(good, **{name: m}) for name, m, _ in bad])
    got = _run_child(tmp_path, {"corrupt": job})
    np.testing.assert_allclose(got["corrupt"]["y"], eye.sum(axis=1) * 2)
    for (name, _, text), error in zip(bad, got["corrupt:errors"]):
        assert error is not None and error[0] == "ValueError", (name, text, error)
        assert f"input {name!r}" in error[1] and text in error[1], (text, error)


def test_valid_edge_structures_pass_the_check(tmp_path):
    """The structure check refuses only what scipy's conversions cannot read safely: empty matrices, a 1-D
    csr, spare capacity after indptr[-1] (which scipy tolerates) and every index dtype pass."""
    path = _write(tmp_path, "spgemm", (EXAMPLES / "spgemm.sdsl").read_text())
    spec = importlib.util.spec_from_file_location("standalone_check", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    spare = sp.csr_array((np.array([1.0, 2.0]), np.array([0, 1]), np.array([0, 1, 2])), shape=(2, 3))
    # room for a third entry (index 5, out of range) past indptr[-1]: not part of the matrix
    spare.indices, spare.data = np.array([0, 1, 5], dtype=spare.indices.dtype), np.array([1.0, 2.0, 9.0])
    valid = [sp.csr_array((0, 0)), sp.csr_array((3, 0)), sp.csc_array((0, 4)), sp.coo_array((2, 2)),
             sp.bsr_array((4, 4), blocksize=(2, 2)), sp.csr_array(np.array([1.0, 0.0, 2.0])), spare,
             sp.csr_array(np.eye(3)).astype(np.float32), sp.coo_array(np.array([0.0, 3.0])),
             sp.lil_array(np.eye(2)), sp.dok_array(np.eye(2)), np.eye(2), [[1.0]]]
    for value in valid:
        m._check_structure("A", value)
    # rows out of order with room after them: scipy's tocoo read the room as entries (garbage row indices)
    room = sp.csr_array((np.array([1.0, 2.0]), np.array([2, 0]), np.array([0, 2, 2])), shape=(2, 3))
    room.indices, room.data = np.array([2, 0, 7], dtype=room.indices.dtype), np.array([1.0, 2.0, 9.0])
    B = sp.csr_array(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(m.compute(A=room, B=B)["C"].toarray(), [[2 * 0 + 8, 2 * 1 + 9, 2 * 2 + 10,
                                                                          2 * 3 + 11], [0, 0, 0, 0]])
    assert room.indices.tolist() == [2, 0, 7] and room.data.tolist() == [1.0, 2.0, 9.0]  # not modified
    with pytest.raises(ValueError, match="input 'A': a column index is out of range"):
        spare.indptr[-1] = 3  # now the out-of-range entry is part of the matrix
        m._check_structure("A", spare)
    with pytest.raises(ValueError, match=r"input 'A' has 0 dimension\(s\), the program declares 2"):
        m.compute(A=3.0, B=B)  # numpy's own message ("Calling nonzero on 0d arrays") named no input


MATVEC = """
input  A: csr<f64>[N, M]
input  x: dense<f64>[M]
output y: dense<f64>[N]
y[i] = sum[j] A[i, j] * x[j]
"""


@st.composite
def _raw_compressed(draw, kind: str):
    """A scipy csr, csc, bsr (2x1 blocks) or coo whose arrays were replaced after construction: any pointers,
    indices and coordinates, valid or not (scipy checks only when it builds one)."""
    major, minor = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    length = draw(st.integers(0, 7))
    indptr = draw(st.lists(st.integers(-1, 8), min_size=major + 1, max_size=major + 1)) if draw(st.booleans()) \
        else [0, *sorted(draw(st.lists(st.integers(0, length), min_size=major, max_size=major)))]
    if draw(st.integers(0, 9)) == 0:
        indptr = indptr + [length]  # one pointer too many
    indices = draw(st.lists(st.integers(-1, minor + 1), min_size=length, max_size=length))
    if kind == "coo":
        A = sp.coo_array((major, minor))
        rows = draw(st.lists(st.integers(-1, major + 1), min_size=length, max_size=length))
        A.coords = (np.array(rows, dtype=np.int32), np.array(indices, dtype=np.int32))
        A.data = np.arange(1.0, length + 1)
        return A
    if kind == "bsr":
        A = sp.bsr_array((2 * major, minor), blocksize=(2, 1))
        A.data = np.arange(1.0, 2 * length + 1).reshape(length, 2, 1)
    else:
        A = sp.csr_array((major, minor)) if kind == "csr" else sp.csc_array((minor, major))
        A.data = np.arange(1.0, length + 1)
    A.indptr = np.array(indptr, dtype=np.int32)
    A.indices = np.array(indices, dtype=np.int32)
    return A


@pytest.mark.parametrize("kind", ["csr", "csc", "bsr", "coo"])
def test_compute_refuses_what_the_binder_refuses_and_agrees_elsewhere(tmp_path, kind):
    """compute()'s structure check against sparsedsl's binder, on csr, csc, bsr and coo values (all but csr
    turned into rows) whose arrays are anything: both refuse the same ones (a wrong one read by scipy or a kernel is
    memory corruption, not an error), and where both accept, the stand-alone module's answer is sparsedsl's."""
    path = _write(tmp_path, "matvec", MATVEC)
    spec = importlib.util.spec_from_file_location("standalone_matvec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kernel = sd.loads(MATVEC, name="matvec").compile(target="numba")

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(_raw_compressed(kind))
    def check(A):
        x = np.arange(1.0, A.shape[1] + 1)
        try:
            want = kernel(A=A, x=x)["y"]
        except sd.SdslInputError:
            want = None
        try:
            got = module.compute(A=A, x=x)["y"]
        except ValueError:
            got = None
        assert (want is None) == (got is None), (A.indptr, A.indices, want, got)
        if want is not None:
            np.testing.assert_array_equal(got, want)

    check()
