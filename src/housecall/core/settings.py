"""Settings from ``HOUSECALL_*`` environment variables, over an optional settings file.

Precedence (highest first): environment variables, the file named by ``HOUSECALL_SETTINGS_FILE``
(``KEY=value`` lines, same names), the defaults below.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path("var") / "housecall.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HOUSECALL_",
        env_file=os.environ.get("HOUSECALL_SETTINGS_FILE") or None,
        extra="ignore",
    )

    database_url: str = Field(default=f"sqlite:///{DEFAULT_SQLITE_PATH}")
    # Request and search limits: exceeding them is a 4xx with an OperationOutcome, never a 500.
    max_body_bytes: int = 16 * 1024 * 1024
    max_bundle_entries: int = 5000
    default_count: int = 20
    max_count: int = 1000
    # Connections to PostgreSQL per process.
    pool_size: int = 10
    # `housecall check` refuses fsync/synchronous_commit off unless the operator insists.
    allow_unsafe_durability: bool = False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
