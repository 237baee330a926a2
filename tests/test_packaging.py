"""The wheel is self-contained: built from a copy of the tree, installed into a fresh virtual environment, and
``sparsedsl demo`` run from a folder outside the tree (interface.md § Install; design.md § 2).

Runs in CI with the rest of the suite (about a minute); ``-m "not packaging"`` skips it locally. No network:
the new environment borrows the already-installed dependencies through a ``.pth`` file naming this
interpreter's site-packages (``--system-site-packages`` would name the base interpreter's, which lacks them
when the tests themselves run inside a virtual environment, as ``.ci/run`` does).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.packaging

IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", "venv",
                                ".pytest_cache", ".hypothesis", ".sdsl_cache", "out", "benchmarks")


def _build_isolation_flags() -> list[str]:
    # Building against the installed setuptools needs no index; otherwise pip fetches it as usual.
    have = importlib.util.find_spec("setuptools") is not None and importlib.util.find_spec("wheel") is not None
    if have:
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 68:
            return ["--no-build-isolation"]
    return []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    out = work / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *_build_isolation_flags(), "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (whl,) = out.glob("sparsedsl-*.whl")
    return whl


def _source_packages() -> set[str]:
    """Every package of the tree, under the name it installs as (grammar/ -> sparsedsl.grammar, ...)."""
    roots = {"sparsedsl": "sparsedsl", "grammar": "sparsedsl.grammar", "backends": "sparsedsl.backends",
             "stdlib": "sparsedsl.stdlib"}
    found = set()
    for folder, name in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    return found


def test_wheel_holds_every_package_and_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _source_packages() - packages
    assert not missing, f"add these to the package list in pyproject.toml: {sorted(missing)}"
    for folder, installed, pattern in (("grammar", "sparsedsl/grammar", "*.lark"),
                                       ("stdlib", "sparsedsl/stdlib", "*.sdsl"),
                                       ("sparsedsl/data", "sparsedsl/data", "*.mtx.gz")):
        expected = {f"{installed}/{p.name}" for p in (ROOT / folder).glob(pattern)}
        assert expected <= names, sorted(expected - names)
    assert "sparsedsl/grammar/sdsl.lark" in names
    assert {f"sparsedsl/data/{m}.mtx.gz" for m in ("ego-Facebook", "ca-HepTh", "wiki-Vote", "bcsstk13")} <= names
    assert "sparsedsl/data/triangles.sdsl" in names and "sparsedsl/data/README.md" in names
    assert not any(n.startswith(("tests/", "examples/", "grammar/", "backends/", "stdlib/")) for n in names)


def test_installed_wheel_runs_the_demo_outside_the_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    borrowed = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    (purelib / "borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["SDSL_CACHE_DIR"] = str(tmp_path / "cache")
    where = subprocess.run([str(python), "-c", "import sparsedsl, sys; print(sparsedsl.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel, not the source tree

    demo = subprocess.run([str(venv / "bin" / "sparsedsl"), "demo"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "triangles: 1,612,010 (matches the published count 1,612,010)" in demo.stdout

    check = subprocess.run([str(python), "-m", "sparsedsl", "check", str(ROOT / "examples" / "gin.sdsl")],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert (check.returncode, check.stderr) == (0, "")
