"""The champions ``leadval serve`` loaded, handed to its server's workers in one file, so that a worker starts without
importing MLflow or asking the registry itself (a second or more of its start-up).

``leadval serve`` starts the server at once and, while BentoML starts, loads the champions from the registry with
every check :func:`serving.api.champions.load_champions` makes, then writes them to the file named in
:data:`HANDOVER_ENV` (:func:`hand_over`). A worker waits for that file when it needs its models
(:func:`handed_over`); when it finds none to serve, it says so in a file beside it (:func:`hand_over_nothing`), so a
waiting worker stops rather than keep the server from stopping. A server started another way (``bentoml serve``,
a container) has no such file and its workers load the champions from the registry. The file is a pickle of
:class:`ServedModels` in ``leadval serve``'s private temporary folder, written whole and then renamed, and read by
the same code in the same environment.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path

from serving.api.champions import NothingToServe, ServedModels, load_champions

HANDOVER_ENV = "LEADVAL_CHAMPIONS_FILE"
"""Where ``leadval serve`` hands the champions it loaded to its workers (unset: they load them themselves)."""
HANDOVER_WAIT_S = 120.0
"""How long a worker waits for the champions before it loads them from the registry itself."""


def hand_over(served: ServedModels, path: Path) -> None:
    """Write ``served`` to ``path`` whole (a worker never reads half a file)."""
    partial = path.with_name(f"{path.name}.partial")
    with partial.open("wb") as out:
        pickle.dump(served, out, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)


def worker_champions() -> ServedModels:
    """The champions a worker serves: the ones ``leadval serve`` handed over, else loaded from the registry."""
    handed = handed_over()
    if handed is not None:
        return handed
    from features.settings import load_settings

    return load_champions(load_settings().tracking_uri)


def _nothing_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.nothing")


def hand_over_nothing(reason: str, path: Path) -> None:
    """Tell the workers waiting on ``path`` that no champion comes, and why."""
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(reason)
    os.replace(partial, _nothing_file(path))


def handed_over(wait_s: float = HANDOVER_WAIT_S) -> ServedModels | None:
    """The champions ``leadval serve`` handed over, once written; None when this server was not started by it, or
    when nothing came within ``wait_s`` (then the worker loads them itself, and says so on stderr). Raises
    :class:`NothingToServe` when ``leadval serve`` found none to serve."""
    where = os.environ.get(HANDOVER_ENV)
    if not where:
        return None
    path = Path(where)
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if _nothing_file(path).exists():
            raise NothingToServe(_nothing_file(path).read_text())
        if time.monotonic() > deadline:
            print(f"warning: leadval serve did not hand over the champions within {wait_s:.0f} s; this worker loads "
                  "them from the registry itself", file=sys.stderr, flush=True)
            return None
        time.sleep(0.005)
    import_lightgbm_without_scikit_learn()
    with path.open("rb") as handed:
        return pickle.load(handed)  # noqa: S301 - written by leadval serve in its private folder (module docstring)


def import_lightgbm_without_scikit_learn() -> None:
    """Import LightGBM as if scikit-learn were not installed (an optional dependency of LightGBM's), in a process
    that only loads or serves models (``leadval serve`` and its workers).

    A served model scores with LightGBM's ``Booster`` alone; LightGBM's scikit-learn wrappers would import
    scikit-learn and SciPy's statistics first, the largest part of a worker's start-up after BentoML's own.
    scikit-learn itself stays importable afterwards; only ``lightgbm.sklearn`` is left without it in this process.
    """
    if "lightgbm" in sys.modules or "sklearn" in sys.modules:
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # an import of it raises ImportError meanwhile
    try:
        import lightgbm  # noqa: F401
    finally:
        del sys.modules["sklearn"]
