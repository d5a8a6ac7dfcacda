"""Job images reach a registry: `mlbatch images push` against Debian's docker-registry on 127.0.0.1,
then pulled back by digest; and a plain `docker build` of a job Dockerfile works with no CA file.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from mlbatch.cli.app import app
from typer.testing import CliRunner

from devtools.devservers import Dockerd, Registry, start_registry
from tests.support.paths import REPO
from tests.support.terminal import say

if TYPE_CHECKING:
    from docker import DockerClient


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


def push(dockerd: Dockerd, registry: Registry, base_image: str, *kinds: str) -> dict:
    result = CliRunner().invoke(
        app,
        ["images", "push", *kinds, "--registry", registry.address, "--base-image", base_image, "--json"],
        env={"DOCKER_HOST": dockerd.host},
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_push_then_pull_back_by_digest(
    images: dict[str, str],
    base_image: str,
    dockerd: Dockerd,
    docker_client: DockerClient,
    registry: Registry,
    pytestconfig: pytest.Config,
) -> None:
    doc = push(dockerd, registry, base_image, "score")
    [row] = doc["images"]
    tag, version = images["score"], images["score"].split(":")[1]
    # The content hash found the image the session built: push builds nothing new.
    assert (row["tag"], row["built"]) == (tag, False)
    assert row["pushed"] == f"{registry.address}/mlbatch/score:{version}"
    assert row["image"] == f"{registry.address}/mlbatch/score@{row['digest']}"
    assert registry.tags("mlbatch/score") == [version]  # the registry's own API, not Docker's view
    say(pytestconfig, f"pushed {row['pushed']} ({row['size_mib']} MiB)")

    # Pull back by digest: the registry serves the manifest the push reported, and it is our image.
    docker_client.images.remove(row["pushed"])  # the local registry tag only; the image stays
    pulled = docker_client.images.pull(row["image"])
    assert pulled.id == docker_client.images.get(tag).id
    assert row["image"] in pulled.attrs["RepoDigests"]
    # What a job records in lineage.json, baked in at build time.
    out = docker_client.containers.run(
        row["image"],
        entrypoint=[
            "python3",
            "-c",
            "import os; print(os.environ['MLBATCH_IMAGE'], os.environ['MLBATCH_CODE_VERSION'])",
        ],
        remove=True,
    )
    assert out.decode().split() == [tag, version]

    # A second push of unchanged code is the same image under the same digest.
    again = push(dockerd, registry, base_image, "score")["images"][0]
    assert again["digest"] == row["digest"]


def test_push_to_a_registry_that_is_not_there_names_it(
    base_image: str, dockerd: Dockerd, images: dict[str, str]
) -> None:
    from devtools.devservers import free_port

    nowhere = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app,
        ["images", "push", "score", "--registry", nowhere, "--base-image", base_image],
        env={"DOCKER_HOST": dockerd.host},
    )
    assert result.exit_code == 3, result.output
    assert nowhere in result.output


@pytest.fixture(scope="module")
def trusting_base(base_image: str, docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The debootstrap base plus this machine's CA bundle in its trust store: the way a team's own
    base image trusts its network's proxy. Here PyPI is reached through such a proxy, so a plain
    build needs a base like this; `mlbatch images` instead passes the CA in docker/build/."""
    from mlbatch.backends.launchers.images import ca_bundle

    context = tmp_path_factory.mktemp("trusting-base")
    shutil.copyfile(ca_bundle(), context / "ca.crt")
    (context / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        "COPY ca.crt /etc/ssl/certs/ca-certificates.crt\n"
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt\n"
    )
    tag = "mlbatch-plain/debian-base:12-trusting"
    docker_client.images.build(path=str(context), tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True)
    return tag


def test_a_plain_docker_build_needs_no_ca_file(
    trusting_base: str, docker_client: DockerClient, pytestconfig: pytest.Config
) -> None:
    """`docker build -f docker/score.Dockerfile .` from the repo: no docker/build/ in the context."""
    assert not (REPO / "docker" / "build").exists()
    tag = "mlbatch-plain/score:test"
    start = time.monotonic()
    image, _ = docker_client.images.build(
        path=str(REPO),
        dockerfile="docker/score.Dockerfile",
        tag=tag,
        buildargs={"BASE_IMAGE": trusting_base},
        network_mode="host",
        rm=True,
        forcerm=True,
    )
    try:
        say(pytestconfig, f"plain build of score.Dockerfile in {time.monotonic() - start:.0f} s")
        out = docker_client.containers.run(
            tag, entrypoint=["python3", "-c", "import xgboost; print(xgboost.__version__)"], remove=True
        )
        jobs_pin = next(
            line.split("==")[1]
            for line in (REPO / "requirements" / "jobs.txt").read_text().splitlines()
            if line.startswith("xgboost==")
        )
        assert out.decode().strip() == jobs_pin  # the pin came from requirements/jobs.txt
        # Without `mlbatch images` there is no content hash: the Dockerfile's defaults say so.
        env = dict(e.split("=", 1) for e in image.attrs["Config"]["Env"])
        assert (env["MLBATCH_IMAGE"], env["MLBATCH_CODE_VERSION"]) == ("mlbatch/score:dev", "unknown")
    finally:
        docker_client.images.remove(image.id, force=True)
