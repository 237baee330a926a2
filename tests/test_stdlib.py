"""The standard library's modules load from the installed package and compute what they document."""
import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

rng = np.random.default_rng(3)


def graph(n=25, density=0.12, seed=1):
    G = sp.random_array((n, n), density=density, format="csr", random_state=seed).astype(bool)
    G = sp.csr_array(G)
    return G


def test_import_from_stdlib_resolves_without_a_local_file(tmp_path):
    main = tmp_path / "main.sdsl"
    main.write_text("import gnn\ninput G: csr<bool>[N, N]\ninput H: dense<f32>[N, F]\noutput Y\n"
                    "Y = gnn.gin(G, H, 0.5)\n")
    G, H = graph(), rng.standard_normal((25, 4)).astype(np.float32)
    Y = sd.load(str(main)).compile(target="ref")(G=G, H=H).Y
    np.testing.assert_allclose(Y, 1.5 * H + G.astype(np.float32) @ H, rtol=1e-5, atol=1e-6)


def load_def(name):
    from importlib import resources

    path = resources.files("sparsedsl.stdlib") / "gnn.sdsl"
    return sd.load(str(path)).function(name).compile(target="ref")


def test_mean_and_max_aggregate_and_degree():
    G, H = graph(seed=4), rng.standard_normal((25, 3)).astype(np.float32)
    Gd = G.toarray()
    mean = load_def("mean_aggregate")(G=G, H=H)["out"]
    mx = load_def("max_aggregate")(G=G, H=H)["out"]
    deg = load_def("degree")(G=G)["out"]
    for i in range(25):
        nb = np.nonzero(Gd[i])[0]
        if len(nb) == 0:
            assert np.all(mean[i] == 0) and np.all(mx[i] == 0)
            continue
        np.testing.assert_allclose(mean[i], H[nb].mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(mx[i], H[nb].max(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(deg, Gd.sum(axis=1))


def test_a_computed_bool_graph_is_a_pattern_for_every_def(tmp_path):
    """A bool matrix computed in the program may store false entries; passed for a csr<bool> parameter it is
    a pattern (spec § 3), as a bound input is: gin, mean_aggregate and degree all count every stored entry."""
    main = tmp_path / "main.sdsl"
    main.write_text("import gnn\ninput A: csr<f32>[N, N]\ninput H: dense<f32>[N, F]\n"
                    "output Y\noutput Mn\noutput D\nM[i, j] = A[i, j] > 0.5\n"
                    "Y = gnn.gin(M, H, 0.0)\nMn = gnn.mean_aggregate(M, H)\nD = gnn.degree(M)\n")
    A = sp.csr_array(np.array([[0, .2, .9], [.7, 0, 0], [.1, .3, 0]], dtype=np.float32))
    H = np.array([[1, 10], [100, 1000], [1e4, 1e5]], dtype=np.float32)
    pattern = (A != 0).astype(np.float32)
    for target in ("ref", "numba"):
        out = sd.load(str(main)).compile(target=target)(A=A, H=H)
        np.testing.assert_allclose(out["Y"], H + pattern @ H)
        np.testing.assert_array_equal(out["D"], [2, 1, 2])
        np.testing.assert_allclose(out["Mn"], (pattern @ H) / np.array([[2], [1], [2]]))
