"""Where a lead model's rows come from: time-ordered train / validation / test splits of the CRM or of a flat file.

Two sources give the same kind of splits:

* the CRM (:func:`crm_splits`): stacked point-in-time snapshots (:mod:`features.lead_labels`), the
  latest ones held out for the test, the ones before for validation, each a full horizon apart; the
  features audited for a warning only (they are point-in-time by construction);
* a flat file, one row per lead with an outcome column (:func:`table_splits`): categoricals detected,
  holdout = the latest rows by ``time_column`` (or by file order with ``holdout="latest"``), else a
  stratified random holdout; the columns audited first (:mod:`training.leads.data.audit`: one-value, id-like
  and too-many-category columns dropped, suspected leakage left out unless kept).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sqlalchemy import Engine

from features.crm.exports import read_export
from features.errors import InvalidInput
from features.lead_features import BEHAVIOUR_FEATURES, PROFILE_FEATURES, as_of_timestamp
from features.lead_history import crm_period, load_crm_frames
from features.lead_labels import LABEL_COLUMN, snapshot_plan, training_snapshots
from training.leads.data.audit import AuditReport, audit_features, audit_table, is_number
from training.leads.fit import LeadModelConfig
from training.leads.reasons import FeatureWording, column_wording, crm_wording
from training.leads.spec import FeatureSpec

INTEGER = r"[+-]?\d+"
DECIMAL_COMMA = r"[+-]?\d+(,\d+)?"
TRUE_WORDS = frozenset({"1", "yes", "y", "true", "t"})
FALSE_WORDS = frozenset({"0", "no", "n", "false", "f"})


@dataclass(frozen=True)
class CrmTrainingConfig:
    """Training from the CRM: the cutoff (nothing after it is read), the horizon and the snapshots."""

    as_of: str | None = None
    horizon_days: int = 90
    snapshot_every_days: int = 30
    valid_snapshots: int = 2
    test_snapshots: int = 2
    max_train_snapshots: int = 24
    model: LeadModelConfig = field(default_factory=LeadModelConfig)


@dataclass(frozen=True)
class TableTrainingConfig:
    """Training from a flat file: which column is what, and how to hold out.

    ``holdout``: ``latest`` = the latest ``test_share`` of rows by ``time_column`` (or by file order
    without one; right for files sorted by date), ``random`` = stratified random, ``auto`` = latest with
    a time column, else random. Validation takes ``valid_share`` of the remaining rows the same way.
    ``keep``: columns to train on whatever the audit finds (suspected leakage, id-like). ``tune_seconds``:
    a time box for the hyper-parameter search on the training split (0: none, the ``model`` as given).
    """

    path: str
    target: str
    positive: str | None = None
    id_column: str | None = None
    time_column: str | None = None
    drop: tuple[str, ...] = ()
    holdout: Literal["auto", "latest", "random"] = "auto"
    test_share: float = 0.2
    valid_share: float = 0.2
    keep: tuple[str, ...] = ()
    tune_seconds: float = 0.0
    model: LeadModelConfig = field(default_factory=LeadModelConfig)

    def __post_init__(self) -> None:
        if not self.tune_seconds >= 0:
            raise InvalidInput(f"--tune: must be a number of seconds >= 0, got {self.tune_seconds}")
        if self.holdout not in ("auto", "latest", "random"):
            raise InvalidInput(f"--holdout: must be auto, latest or random, got {self.holdout!r}")
        for name in ("test_share", "valid_share"):
            if not 0 < getattr(self, name) < 0.5:
                raise InvalidInput(f"{name}: must be between 0 and 0.5, got {getattr(self, name)}")


@dataclass(frozen=True)
class LeadSplits:
    """Train, validation and test rows (features plus the ``converted`` label) and how to read them."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    spec: FeatureSpec
    wording: tuple[FeatureWording, ...]
    horizon_days: int | None
    source: dict[str, Any]
    id_dtype: str = "string"
    audit: AuditReport | None = None

    @property
    def all_rows(self) -> pd.DataFrame:
        return pd.concat([self.train, self.valid, self.test], ignore_index=True)


def crm_splits(engine: Engine, config: CrmTrainingConfig) -> LeadSplits:
    """Stacked snapshots of the CRM as of ``config.as_of`` (default: its latest event), split in time."""
    start, end = crm_period(engine)
    cutoff = as_of_timestamp(config.as_of) if config.as_of else end
    crm = load_crm_frames(engine, cutoff)
    plan = snapshot_plan(start, cutoff, config.horizon_days, config.snapshot_every_days, config.valid_snapshots,
                         config.test_snapshots, config.max_train_snapshots)
    parts = {name: training_snapshots(crm.leads, crm.activities, getattr(plan, name), config.horizon_days)
             for name in ("train", "valid", "test")}
    spec = FeatureSpec.learn(parts["train"], "lead_id", PROFILE_FEATURES, BEHAVIOUR_FEATURES)
    source = {"source": "crm", "cutoff": cutoff, "data_start": start, "horizon_days": config.horizon_days,
              "snapshots": {name: [d.isoformat() for d in getattr(plan, name)] for name in ("train", "valid", "test")},
              "leads": len(crm.leads), "activities": len(crm.activities)}
    audit = None
    if len(parts["train"]) and parts["train"][LABEL_COLUMN].nunique() == 2:
        audit = audit_features(parts["train"], parts["train"][LABEL_COLUMN].to_numpy(), spec.features,
                               config.model.seed)
    return LeadSplits(parts["train"], parts["valid"], parts["test"], spec, crm_wording(spec.features),
                      config.horizon_days, source, audit=audit)


def read_lead_table(path: Path, spec: FeatureSpec | None = None, id_column: str | None = None) -> pd.DataFrame:
    """A CSV (comma, semicolon or tab separated) or Parquet file of leads with typed columns.

    With a model's ``spec``, its categorical columns are read as text and its numeric ones as numbers
    (a non-number is an error naming the column and rows). Without, CSV columns whose every non-empty
    value is a number become numbers (integers when every value is written as one and none is missing, else
    floats; in a semicolon or tab separated file a decimal comma, ``-0,25``, is read as a decimal point when
    the whole column is written so) and the rest stay text. The id column (``id_column`` or the spec's)
    keeps the file's text. Empty cells are missing. What reading changed (unnamed empty columns dropped) is
    in ``frame.attrs["notes"]``.
    """
    id_column = id_column or (spec.id_column if spec else None)
    export = read_export(Path(path))
    frame = export.frame
    typed = {}
    for name in frame.columns:
        column = frame[name]
        textual = column.dtype == object or isinstance(column.dtype, pd.StringDtype)
        if textual and name == id_column:
            typed[name] = column.astype("str")
        elif pd.api.types.is_bool_dtype(column) or (spec is not None and name in spec.categorical):
            typed[name] = _missing_if_blank(column.astype("str")) if textual else column.astype("str")
        elif not textual:
            typed[name] = column
        else:
            text = _missing_if_blank(column.astype("str"))
            numbers = _numbers(text, decimal_comma=export.delimiter in (";", "\t"))
            all_numbers = numbers.notna().sum() == text.notna().sum()
            if spec is not None and name in spec.numeric and not all_numbers:
                bad = np.flatnonzero((numbers.isna() & text.notna()).to_numpy())[:5].tolist()
                raise InvalidInput(f"{name}: rows {bad} are not numbers (e.g. {text.iloc[bad[0]]!r}); "
                                   "the model expects a number or an empty cell")
            typed[name] = numbers if all_numbers and (spec is None or name in spec.numeric) else text
    table = pd.DataFrame(typed)
    table.attrs["notes"] = tuple(export.notes)
    return table


def _numbers(text: pd.Series, decimal_comma: bool) -> pd.Series:
    """Text as numbers (NaN where it is not one): int64 when every value is written as an integer and none is
    missing (an id or a count, as the audit tells apart from measurements), else float64."""
    present = text.dropna()
    commas = present.str.contains(",", regex=False)
    if decimal_comma and commas.any() and present.str.fullmatch(DECIMAL_COMMA).all():
        text = text.str.replace(",", ".", regex=False)
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    whole = len(text) > 0 and len(present) == len(text) and numbers.notna().all()
    if whole and present.str.fullmatch(INTEGER).all() and np.abs(numbers).max() < 2**53:
        return numbers.astype("int64")
    return numbers


def _missing_if_blank(text: pd.Series) -> pd.Series:
    stripped = text.str.strip()
    return stripped.where(stripped != "", None)


def table_outcome(values: pd.Series, target: str, positive: str | None) -> np.ndarray:
    """0/1 outcomes from the target column: ``== positive`` when given, else 0/1, yes/no or true/false."""
    missing = values.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)[:5].tolist()
        raise InvalidInput(f"{target}: {int(missing.sum())} rows without an outcome (rows {rows}); "
                           "every row needs one")
    text = values.astype("str").str.strip()
    if pd.api.types.is_numeric_dtype(values):
        text = pd.Series(np.where(values.to_numpy() == 1, "1", np.where(values.to_numpy() == 0, "0", text)))
    if positive is not None:
        outcome = (text == str(positive)).to_numpy()
        if not outcome.any():
            raise InvalidInput(f"--positive: no row of {target} equals {positive!r}; values are "
                               f"{sorted(text.unique().tolist())[:10]}")
        return outcome.astype("int8")
    lowered = text.str.lower()
    seen = set(lowered.unique().tolist())
    if not seen <= TRUE_WORDS | FALSE_WORDS:
        raise InvalidInput(f"{target}: values {sorted(text.unique().tolist())[:10]} are not 0/1, yes/no or "
                           "true/false; name the converted value with --positive")
    return lowered.isin(TRUE_WORDS).to_numpy().astype("int8")


def table_splits(frame: pd.DataFrame, config: TableTrainingConfig) -> LeadSplits:
    """Features, outcome and holdout of a flat file (see :class:`TableTrainingConfig`), its columns audited
    (:func:`training.leads.data.audit.audit_table`: leakage judged on the training rows only).

    The split frames keep every column of the file (a champion trained on other columns can still be
    scored on the same holdout); the model's columns are the spec's.
    """
    named = [c for c in (config.target, config.id_column, config.time_column, *config.drop) if c]
    options = {"--target": [config.target], "--id-col": [config.id_column], "--time-col": [config.time_column],
               "--drop": config.drop, "--keep": config.keep}
    missing = [f"{flag} {c}" for flag, columns in options.items() for c in columns if c and c not in frame.columns]
    if missing:
        raise InvalidInput(f"{'; '.join(missing)}: not a column of the file; it has {list(frame.columns)}")
    clash = [c for c in config.keep if c in named]
    if clash:
        raise InvalidInput(f"--keep {', '.join(clash)}: the target, id, time and --drop columns are not features")
    if config.id_column and frame[config.id_column].duplicated().any():
        repeated = frame.loc[frame[config.id_column].duplicated(), config.id_column].head(5).tolist()
        raise InvalidInput(f"--id-col {config.id_column}: ids repeat (e.g. {repeated}); expected one row per lead")
    outcome = table_outcome(frame[config.target], config.target, config.positive)
    candidates = [c for c in frame.columns if c not in named]
    if not candidates:
        raise InvalidInput("--table: no feature columns left besides the target, id, time and dropped columns")
    reading = tuple(frame.attrs.get("notes", ()))
    frame = frame.reset_index(drop=True)
    data = frame.assign(**{LABEL_COLUMN: outcome})
    rows = np.arange(len(frame))
    order = _holdout_order(frame, config)
    if order is None:
        rest, test = train_test_split(rows, test_size=config.test_share, stratify=outcome,
                                      random_state=config.model.seed)
        train, valid = train_test_split(rest, test_size=config.valid_share, stratify=outcome[rest],
                                        random_state=config.model.seed)
    else:
        n_test = int(round(len(order) * config.test_share))
        rest, test = order[: len(order) - n_test], order[len(order) - n_test:]
        n_valid = int(round(len(rest) * config.valid_share))
        train, valid = rest[: len(rest) - n_valid], rest[len(rest) - n_valid:]
    audit = audit_table(frame, train, outcome[train], candidates, config.keep, config.model.seed)
    audit = replace(audit, notes=reading + audit.notes)
    if not audit.features:
        raise InvalidInput(f"--table: no feature columns left after the audit; it dropped {audit.dropped} "
                           "(--keep COL to train on a column anyway)")
    categorical = tuple(c for c in audit.features if not is_number(frame[c]))
    numeric = tuple(c for c in audit.features if is_number(frame[c]))
    parts = [data.iloc[part].reset_index(drop=True) for part in (train, valid, test)]
    spec = FeatureSpec.learn(parts[0], config.id_column, categorical, numeric)
    id_dtype = "string"
    if config.id_column and pd.api.types.is_numeric_dtype(frame[config.id_column]):
        id_dtype = "long" if pd.api.types.is_integer_dtype(frame[config.id_column]) else "double"
    source = {"source": "table", "file": Path(config.path).name, "rows": len(frame),
              "holdout": "random" if order is None else "latest", "dropped": dict(audit.dropped),
              "leaky": dict(audit.leaky), "kept": list(audit.kept), "positive_rate": float(outcome.mean())}
    return LeadSplits(*parts, spec, column_wording(spec.features, categorical), None, source, id_dtype, audit)


def _holdout_order(frame: pd.DataFrame, config: TableTrainingConfig) -> np.ndarray | None:
    """Row order oldest first for a latest-period holdout, or None for a random one."""
    latest = config.holdout == "latest" or (config.holdout == "auto" and config.time_column is not None)
    if not latest:
        return None
    if config.time_column is None:
        return np.arange(len(frame))
    times = frame[config.time_column]
    if not pd.api.types.is_numeric_dtype(times):
        times = pd.to_datetime(times, errors="coerce", format="mixed")
    if times.isna().any():
        rows = np.flatnonzero(times.isna().to_numpy())[:5].tolist()
        raise InvalidInput(f"--time-col {config.time_column}: rows {rows} have no readable date or number")
    return np.argsort(times.to_numpy(), kind="stable")
