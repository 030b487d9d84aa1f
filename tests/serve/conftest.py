"""A tiny trained victim, shared by the serving tests."""

import pytest


@pytest.fixture(scope="session")
def victim_dir(tiny_root, tmp_path_factory):
    from divqat.configs import VictimConfig
    from divqat.pipeline import train

    out = tmp_path_factory.mktemp("serve") / "victim"
    train(VictimConfig(method="qat", epochs=1, fp_epochs=1, batch_size=128, seed=0), out, data_root=tiny_root)
    return out


@pytest.fixture(scope="session")
def postgres_base():
    from postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_base):
    from postgres import new_database

    return new_database(postgres_base)


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request, tmp_path):
    """Where a test's key database lives: an SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "k.db")
    return request.getfixturevalue("postgres_url")
