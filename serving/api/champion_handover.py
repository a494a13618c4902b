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

Kept for the next start
-----------------------
``leadval serve`` keeps the champions it handed over beside a local SQLite MLflow store, so that a restart on a
registry nothing has written to since hands them to its workers at once, without importing MLflow (loading them from
the registry is most of a start-up: MLflow's import, its store and the models' files, 3 s or more).

What was kept is used only for the exact state it was loaded from (:func:`store_state`): the store file's identity,
size, modification time and SQLite's file change counter (header bytes 24-27, incremented by every transaction
that changes the file, such as a new version or a moved ``@champion`` alias), together with leadval's own source
files and the installed packages (the pickle is of leadval's classes). Anything else, or a store that cannot be so
fingerprinted (a tracking server, a database server, SQLite in WAL mode, where the main file does not show every
change), loads from the registry as before. The state is taken before the champions are loaded and again after the
registry was checked; they are kept only when nothing changed in between.

Kept in ``<store>.leadval-champions/`` (:func:`keep_champions`): the pickle :func:`hand_over` wrote and a JSON file
with the state, the pickle's SHA-256 and the registry's warnings; the pickle is copied whole to ``leadval serve``'s
private folder, where the workers look, and only when its digest matches (:func:`hand_over_kept`). Whoever can
write the store's folder can already change what MLflow loads from it (its models are pickles too), so this trusts
nothing more.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serving.api.champions import NothingToServe, ServedModels, load_champions

HANDOVER_ENV = "LEADVAL_CHAMPIONS_FILE"
"""Where ``leadval serve`` hands the champions it loaded to its workers (unset: they load them themselves)."""
HANDOVER_WAIT_S = 120.0
"""How long a worker waits for the champions before it loads them from the registry itself."""
SQLITE_HEADER = b"SQLite format 3\x00"
KEPT_SUFFIX = ".leadval-champions"
KEPT_PICKLE = "champions.pickle"
KEPT_FACTS = "champions.json"
LEADVAL_PACKAGES = ("features", "training", "serving")
"""leadval's own packages: a change to any of their files is a change of what the kept pickle holds."""


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


@dataclass(frozen=True)
class KeptChampions:
    """Champions kept for the store's present state, now handed over: the registry's warnings when they were kept."""

    warnings: list[str]


def _store_file(tracking_uri: str) -> Path | None:
    from features.crm.urls import sqlite_file

    path = sqlite_file(tracking_uri)
    return None if path is None else path.absolute()


def _code_state() -> list[str]:
    """leadval's source files (path, size, modification time) and the installed distributions, in one list."""
    root = Path(__file__).resolve().parents[2]
    files = []
    for package in LEADVAL_PACKAGES:
        for folder, _, names in os.walk(root / package):
            for name in names:
                if name.endswith(".py"):
                    stat = os.stat(os.path.join(folder, name))
                    files.append(f"{os.path.join(folder, name)}:{stat.st_size}:{stat.st_mtime_ns}")
    installed = []
    for entry in sys.path:
        if entry.endswith("-packages") and os.path.isdir(entry):
            installed += [name for name in os.listdir(entry) if name.endswith((".dist-info", ".egg-info"))]
    return sorted(files) + sorted(installed) + [sys.version]


def store_state(tracking_uri: str) -> str | None:
    """A digest of the local SQLite store's present state, leadval's code and the installed packages; None when the
    store is no local SQLite file in rollback-journal mode (then nothing is kept or used)."""
    path = _store_file(tracking_uri)
    if path is None:
        return None
    wal = path.with_name(f"{path.name}-wal")
    try:
        if wal.exists() and wal.stat().st_size:
            return None
        with path.open("rb") as store:
            header = store.read(100)
            stat = os.fstat(store.fileno())
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        return None
    facts = [str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, header[24:28].hex(),
             header[92:96].hex(), *_code_state()]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def kept_champions_folder(tracking_uri: str) -> Path | None:
    """Where the champions are kept for a local SQLite store (None for any other)."""
    path = _store_file(tracking_uri)
    return None if path is None else path.with_name(f"{path.name}{KEPT_SUFFIX}")


def _digest(path: Path) -> str:
    with path.open("rb") as kept:
        return hashlib.file_digest(kept, "sha256").hexdigest()


def hand_over_kept(tracking_uri: str, handover: Path) -> KeptChampions | None:
    """Hand the champions kept for the store's present state over in ``handover`` (in ``leadval serve``'s private
    folder, written whole); None when none were kept for that state or the kept file is not whole."""
    state, folder = store_state(tracking_uri), kept_champions_folder(tracking_uri)
    if state is None or folder is None:
        return None
    partial = handover.with_name(f"{handover.name}.partial")
    try:
        facts = json.loads((folder / KEPT_FACTS).read_text())
        if facts.get("state") != state:
            return None
        shutil.copyfile(folder / KEPT_PICKLE, partial)
        if _digest(partial) != facts.get("sha256"):
            partial.unlink()
            return None
        os.replace(partial, handover)
    except (OSError, ValueError, AttributeError):  # AttributeError: JSON that is no object
        return None
    return KeptChampions(warnings=[str(w) for w in facts.get("warnings", [])])


def keep_champions(tracking_uri: str, state: str | None, handed_over: Path, warnings: list[str]) -> bool:
    """Keep the champions handed over in ``handed_over`` for the next start, when the store is still in ``state``
    (taken before they were loaded); True when kept. A store folder that cannot be written to keeps nothing."""
    folder = kept_champions_folder(tracking_uri)
    if state is None or folder is None or store_state(tracking_uri) != state:
        return False
    try:
        folder.mkdir(exist_ok=True)
        partial = folder / f"{KEPT_PICKLE}.{os.getpid()}.partial"
        shutil.copyfile(handed_over, partial)
        facts = {"state": state, "sha256": _digest(partial), "warnings": warnings}
        facts_partial = folder / f"{KEPT_FACTS}.{os.getpid()}.partial"
        facts_partial.write_text(json.dumps(facts))
        os.replace(partial, folder / KEPT_PICKLE)
        os.replace(facts_partial, folder / KEPT_FACTS)
    except OSError:
        return False
    return True
