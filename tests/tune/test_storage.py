"""``--storage postgresql://...`` as the README writes it: the installed driver is used."""

from __future__ import annotations

import importlib.util
import warnings

import pytest

from cellbench.exceptions import InvalidParameterError, MissingDependencyError
from cellbench.tune.storage import postgres_driver_url
from cellbench.tune.study import TuneSettings, make_storage


def test_a_bare_postgresql_url_uses_the_driver_the_extra_installs():
    pytest.importorskip("psycopg2")
    assert postgres_driver_url("postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert postgres_driver_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert postgres_driver_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert postgres_driver_url("sqlite:///x.db") == "sqlite:///x.db"


def test_an_unreachable_server_is_a_connection_error_not_a_missing_module():
    pytest.importorskip("psycopg2")
    with pytest.raises(InvalidParameterError, match="must be reachable") as info:
        make_storage("postgresql://nobody@127.0.0.1:9/db", None,
                     TuneSettings(heartbeat=1, grace=5))
    assert "No module named" not in str(info.value)
    assert "OperationalError" in str(info.value)


def test_a_missing_driver_is_named_with_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("psycopg") else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"needs a PostgreSQL driver \(psycopg2 or "
                                                     r"psycopg\); none is installed\. Install "
                                                     r"it with: pip install 'cellbench\["
                                                     r"postgres\]'"):
        make_storage("postgresql://u@127.0.0.1/db", None, TuneSettings())


def test_a_database_storage_keeps_optunas_experimental_warnings_off_the_terminal(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_storage(f"sqlite:///{tmp_path / 'study.db'}", None, TuneSettings())
    assert not [w for w in caught if "experimental" in str(w.message).lower()], caught


@pytest.mark.slow
def test_the_readme_url_works_with_a_real_server(postgres_url):
    bare = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    storage = make_storage(bare, None, TuneSettings(heartbeat=1, grace=5))
    import optuna

    study = optuna.create_study(study_name="readme-url", storage=storage)
    assert study.study_name == "readme-url"
