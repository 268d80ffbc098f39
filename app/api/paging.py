"""Paging parameters every list route shares, bounded so no value can overflow the SQL."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

MAX_SKIP = 2**31 - 1  # PostgreSQL and SQLite take 64-bit offsets; a larger value was a 500
MAX_LIMIT = 500

Skip = Annotated[int, Query(ge=0, le=MAX_SKIP, description="Rows to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows to return at most")]
