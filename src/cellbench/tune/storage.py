"""Database URLs for studies shared by many machines: the driver made explicit.

>>> postgres_driver_url("sqlite:///study.db")
'sqlite:///study.db'
"""

from __future__ import annotations

import importlib.util

from ..exceptions import MissingDependencyError

__all__ = ["POSTGRES_DRIVERS", "postgres_driver_url"]


#: PostgreSQL drivers SQLAlchemy knows, in order of preference, with their import names;
#: the ``postgres`` extra installs the first
POSTGRES_DRIVERS = (("psycopg2", "psycopg2"), ("psycopg", "psycopg"))


def postgres_driver_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed made explicit.

    SQLAlchemy picks a default driver for a bare ``postgresql://`` (psycopg2 up to 2.0,
    psycopg 3 from 2.1), which need not be the one installed; the ``postgres`` extra installs
    psycopg2. A missing driver is named with the command that installs it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        return url
    wanted = scheme.partition("+")[2]
    if wanted and wanted not in dict(POSTGRES_DRIVERS):
        return url  # another driver (asyncpg, pg8000, ...): SQLAlchemy says if it is missing
    candidates = [d for d in POSTGRES_DRIVERS if not wanted or d[0] == wanted]
    for dialect, module in candidates:
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://{rest}"
    names = " or ".join(m for _, m in candidates) or wanted
    raise MissingDependencyError(
        f"storage {url!r} needs a PostgreSQL driver ({names}); none is installed. Install it "
        "with: pip install 'cellbench[postgres]'.")
