"""One typed settings object: CLI flags override environment variables, which override defaults."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_URL = "sqlite:///data/crm.db"
DEFAULT_TRACKING_URI = "sqlite:///models/mlflow.db"
DEFAULT_ARTIFACT_ROOT = "models/artifacts"


class Settings(BaseSettings):
    """Where the CRM and the MLflow store live.

    Environment: ``LEADVAL_DB``, ``MLFLOW_TRACKING_URI``, ``LEADVAL_ARTIFACT_ROOT``.
    Nothing is created or configured when this object is built.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    db: str = Field(default=DEFAULT_DB_URL, validation_alias="LEADVAL_DB")
    tracking_uri: str = Field(default=DEFAULT_TRACKING_URI, validation_alias="MLFLOW_TRACKING_URI")
    artifact_root: str = Field(default=DEFAULT_ARTIFACT_ROOT, validation_alias="LEADVAL_ARTIFACT_ROOT")


def load_settings(**overrides: str | None) -> Settings:
    """Settings from the environment, with non-None ``overrides`` (CLI flags) taking precedence."""
    base = Settings()
    given = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=given) if given else base
