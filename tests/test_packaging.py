"""The three import packages resolve inside this repo, respect their layers and keep the layout readable."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest
import setuptools

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("package", ["features", "training", "serving"])
def test_package_resolves_inside_repo(package: str) -> None:
    """PyPI has packages named `features`; ours must be the one imported."""
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == REPO_ROOT / package


def test_import_layers_hold() -> None:
    """serving -> training -> features, the layers inside each, and features never imports mlflow or bentoml."""
    contracts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(contracts)} kept, 0 broken" in result.stdout


def test_importing_does_not_touch_disk(tmp_path: Path) -> None:
    """Nothing happens on import: no data/ or models/ folder appears in the working directory."""
    code = "import features.settings, features.crm.store, features.crm.schema, serving.cli.app"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []


PACKAGES = ("features", "training", "serving")
MAX_MODULES_PER_FOLDER = 12
MAX_MODULE_LINES = 450


def _package_folders() -> list[Path]:
    return [folder for package in PACKAGES for folder in [REPO_ROOT / package, *(REPO_ROOT / package).rglob("*")]
            if folder.is_dir() and (folder / "__init__.py").exists()]


def test_every_sub_package_resolves_inside_repo() -> None:
    for package in PACKAGES:
        root = importlib.import_module(package)
        for found in pkgutil.walk_packages(root.__path__, f"{package}."):
            assert Path(importlib.util.find_spec(found.name).origin).resolve().is_relative_to(REPO_ROOT), found.name


def test_no_folder_holds_more_than_a_dozen_modules() -> None:
    """A folder past a dozen modules holds two concepts: give each its sub-package."""
    crowded = {str(f.relative_to(REPO_ROOT)): n for f in _package_folders()
               if (n := len([m for m in f.glob("*.py") if m.name != "__init__.py"])) > MAX_MODULES_PER_FOLDER}
    assert not crowded


def test_no_module_is_over_450_lines() -> None:
    long = {str(m.relative_to(REPO_ROOT)): n for f in _package_folders() for m in f.glob("*.py")
            if (n := len(m.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long


def test_no_two_modules_import_each_other() -> None:
    """Function-level imports included: a cycle between two modules means they are one concept, or two in a knot."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    mutual = sorted({tuple(sorted((module, imported))) for module in graph.modules
                     for imported in graph.find_modules_directly_imported_by(module)
                     if module in graph.find_modules_directly_imported_by(imported)})
    assert not mutual


def _shipped_files() -> set[str]:
    """Every module of the three packages and every file they read at run time (the report's templates)."""
    return {str(p.relative_to(REPO_ROOT)) for package in PACKAGES for p in (REPO_ROOT / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_the_distribution_ships_every_sub_package_and_the_templates() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(setuptools.find_packages(str(REPO_ROOT), include=config["packages"]["find"]["include"]))
    assert found == {".".join(f.relative_to(REPO_ROOT).parts) for f in _package_folders()}
    data = {f"{package.replace('.', '/')}/{pattern}" for package, patterns in config["package-data"].items()
            for pattern in patterns}
    non_python = {f for f in _shipped_files() if not f.endswith(".py")}
    assert non_python and all(any(fnmatch.fnmatch(f, pattern) for pattern in data) for f in non_python)


@pytest.mark.slow
def test_the_bento_ships_every_module_and_the_templates(tmp_path: Path) -> None:
    """``bentoml build`` (as the README says to run it) packs what the service imports and reads."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml = Path(sys.executable).with_name("bentoml")
    subprocess.run([str(bentoml), "build", "--output", "tag"], cwd=REPO_ROOT, env=env, check=True,
                   capture_output=True, text=True)
    (source,) = tmp_path.glob("bentos/leadval/*/src")
    packed = {str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()}
    assert _shipped_files() <= packed


def test_the_readme_code_map_points_at_every_module() -> None:
    """Each module is named in the README, by its path or by its folder's."""
    readme = (REPO_ROOT / "README.md").read_text()
    unmapped = [m for f in _package_folders() for m in f.glob("*.py") if m.name != "__init__.py"
                and f"`{m.relative_to(REPO_ROOT)}`" not in readme and f"`{f.relative_to(REPO_ROOT)}/`" not in readme]
    assert not unmapped
