"""The three import packages resolve inside this repo and respect their layers."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("package", ["features", "training", "serving"])
def test_package_resolves_inside_repo(package: str) -> None:
    """PyPI has packages named `features`; ours must be the one imported."""
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == REPO_ROOT / package


def test_import_layers_hold() -> None:
    """serving -> training -> features, and features never imports mlflow or bentoml."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken" in result.stdout


def test_importing_does_not_touch_disk(tmp_path: Path) -> None:
    """Nothing happens on import: no data/ or models/ folder appears in the working directory."""
    code = "import features.settings, features.crm.store, features.crm.schema, serving.cli.app"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert list(tmp_path.iterdir()) == []
