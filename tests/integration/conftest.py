"""Real servers for integration tests, started by the test set-up itself (installed if missing)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from mlbatch.backends.launchers.images import build_image

from devtools.devservers import Dockerd, MariaDB, Postgres, start_dockerd, start_mariadb, start_moto_s3, start_postgres
from tests.support.appdb import POSTGRES_PASSWORD
from tests.support.paths import REPO
from tests.support.terminal import say

if TYPE_CHECKING:
    from docker import DockerClient

BASE_IMAGE = "mlbatch/debian-base:12"


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory) -> Iterator[MariaDB]:
    server = start_mariadb(tmp_path_factory.mktemp("mariadb"))
    yield server
    server.stop()


@pytest.fixture
def mariadb_url(mariadb: MariaDB) -> Iterator[str]:
    """A fresh, empty database on the shared server for each test."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(mariadb.url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    yield mariadb.url.rsplit("/", 1)[0] + f"/{name}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE `{name}`"))
    admin.dispose()


# --- PostgreSQL: Aurora PostgreSQL's stand-in as the app DB ------------------------------------


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> Iterator[Postgres]:
    """PostgreSQL 15 (Debian's); the app's user owns its database and is no superuser, as on Aurora."""
    server = start_postgres(
        tmp_path_factory.mktemp("postgres"),
        database="mlbatch",
        user="mlbatch",
        password=POSTGRES_PASSWORD,
        createdb=True,
    )
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database on the shared server for each test, owned by the app's user."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")  # CREATE DATABASE runs outside a transaction
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres.url().rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))  # a killed test may leave sessions
    admin.dispose()


# --- The app DB suites: every test that takes ``appdb_url`` runs on each server ----------------

APPDB_SERVERS = ("mariadb", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``appdb_url`` (directly or through a fixture) runs a test once per app DB server: MariaDB
    for Aurora MySQL, PostgreSQL for Aurora PostgreSQL. ``@pytest.mark.appdb("mariadb")`` keeps a
    test that is about one backend (LOAD DATA, KILL QUERY, the Aurora proxy) on that one."""
    if "appdb_url" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("appdb")
    servers = marker.args if marker else APPDB_SERVERS
    unknown = set(servers) - set(APPDB_SERVERS)
    if unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: appdb marker names {sorted(unknown)}")
    metafunc.parametrize("appdb_url", servers, indirect=True)


@pytest.fixture
def appdb_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on the server this test's parameter names; on MariaDB it is the test's
    ``mariadb_url`` (the same database, for tests that also use that one)."""
    return request.getfixturevalue({"mariadb": "mariadb_url", "postgresql": "postgres_url"}[request.param])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = start_moto_s3()
    yield server.endpoint
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> Iterator[dict[str, str]]:
    """AWS_* variables pointing boto3, pyarrow and the jobs at the moto server."""
    from devtools.devservers import s3_environment

    env = s3_environment(s3_endpoint)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield env
    os.environ.pop("AWS_ENDPOINT_URL", None)


# --- Docker: a daemon of our own and the job images (train, score), built once per session ---


@pytest.fixture(scope="session")
def dockerd() -> Dockerd:
    return start_dockerd()  # left running for the session (atexit stops it); images stay cached


@pytest.fixture(scope="session")
def docker_client(dockerd: Dockerd, pytestconfig: pytest.Config) -> Iterator[DockerClient]:
    import docker

    client = docker.DockerClient(base_url=dockerd.host, timeout=600)
    say(pytestconfig, f"dockerd at {dockerd.host}, storage driver {client.info()['Driver']}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(dockerd: Dockerd, pytestconfig: pytest.Config) -> str:
    """The debootstrap base every image builds on here (no registry to pull one from)."""
    start = time.monotonic()
    base = subprocess.run(
        [str(REPO / "docker" / "build-base.sh"), BASE_IMAGE],
        env={**os.environ, "DOCKER_HOST": dockerd.host},
        capture_output=True,
        text=True,
    )
    assert base.returncode == 0, f"docker/build-base.sh failed ({base.returncode}):\n{base.stdout}{base.stderr}"
    say(pytestconfig, f"base {BASE_IMAGE} ready in {time.monotonic() - start:.0f} s")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def images(base_image: str, docker_client: DockerClient, pytestconfig: pytest.Config) -> dict[str, str]:
    import docker

    tags = {}
    for kind in ("train", "score"):
        img = build_image(docker_client, kind, base_image=BASE_IMAGE)
        state = f"built in {img.seconds:.0f} s" if img.built else "cached"
        say(pytestconfig, f"{img.tag}: {state}, {img.size_bytes / 2**20:.0f} MiB")
        tags[kind] = img.tag
        for old in docker_client.images.list(name=f"mlbatch/{kind}"):  # earlier code versions: free the disk
            if img.tag not in old.tags:
                with contextlib.suppress(docker.errors.APIError):  # still used by a kept container
                    docker_client.images.remove(old.id, force=False)
    return tags
