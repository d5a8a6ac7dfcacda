"""``mlbatch images``: build the job images (train, score) and the Airflow image, push them to a registry.

Tags are content hashes (``mlbatch/<kind>:<hash>``, see :mod:`mlbatch.backends.launchers.images`): a
rebuild with unchanged code builds nothing, and a push of an unchanged image uploads nothing
new. ``push`` builds what is missing first, then prints each image by digest, the reference a
task definition or a Helm value should use. The Docker daemon is ``DOCKER_HOST``'s; registry
credentials are Docker's own (``docker login``; for ECR, ``aws ecr get-login-password``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated, Any

import docker
import typer
from docker.errors import DockerException

from mlbatch.backends.launchers.images import (
    JOB_KINDS,
    KINDS,
    TORCH_MODES,
    BuiltImage,
    ImageBuildError,
    build_image,
    push_image,
)
from mlbatch.cli.common import out
from mlbatch.errors import StageFailed, UsageError

images_app = typer.Typer(
    help="Build the job images and the Airflow image (content-hash tags) and push them to a registry.",
    no_args_is_help=True,
)

KindsArg = Annotated[
    list[str] | None, typer.Argument(help=f"Images to build: {', '.join(KINDS)} (default: {' '.join(JOB_KINDS)}).")
]
BaseOpt = Annotated[
    str | None,
    typer.Option(
        help="BASE_IMAGE build arg, e.g. mlbatch/debian-base:12 (docker/build-base.sh) where no registry is reachable."
    ),
]
TorchOpt = Annotated[
    str, typer.Option(help="Torch in the job images: none, pypi (the CUDA build) or wheel (a local CPU wheel).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show the build's output.")]


def register(app: typer.Typer) -> None:
    app.add_typer(images_app, name="images")


def _check(kinds: list[str] | None, torch: str) -> list[str]:
    chosen = kinds or list(JOB_KINDS)
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise UsageError(f"unknown image {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    if torch not in TORCH_MODES:
        raise UsageError(f"--torch {torch!r} is not one of {', '.join(TORCH_MODES)}")
    return list(dict.fromkeys(chosen))


def _client() -> Any:

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        raise StageFailed(f"no Docker daemon answers (DOCKER_HOST): {exc}") from exc
    return client


def _build_all(client: Any, kinds: list[str], base_image: str | None, torch: str) -> list[BuiltImage]:

    built = []
    for kind in kinds:
        try:
            built.append(build_image(client, kind, base_image=base_image, torch=torch))
        except (ImageBuildError, DockerException) as exc:  # exit 3, saying which image first
            raise StageFailed(f"building the {kind} image failed: {exc}") from exc
    return built


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)


def _built_row(img: BuiltImage) -> dict[str, Any]:
    return {
        "kind": img.kind,
        "tag": img.tag,
        "built": img.built,
        "seconds": round(img.seconds, 1),
        "size_mib": round(img.size_bytes / 2**20),
    }


@images_app.command()
def build(
    kinds: KindsArg = None,
    base_image: BaseOpt = None,
    torch: TorchOpt = "none",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Build images tagged mlbatch/<kind>:<content hash>; an image whose hash exists is not rebuilt."""
    configure_logging(verbose)
    chosen = _check(kinds, torch)
    built = _build_all(_client(), chosen, base_image, torch)
    if as_json:
        out.print_json(json.dumps({"images": [_built_row(i) for i in built]}))
        return
    for img in built:
        state = f"built in {img.seconds:.0f} s" if img.built else "up to date"
        out.print(f"{img.tag}\t{state}\t{img.size_bytes / 2**20:.0f} MiB", highlight=False)


@images_app.command()
def push(
    registry: Annotated[
        str,
        typer.Option(
            help="The registry: host, host:port or host/path, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com."
        ),
    ],
    kinds: KindsArg = None,
    base_image: BaseOpt = None,
    torch: TorchOpt = "none",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Build what is missing, push to REGISTRY as <registry>/mlbatch/<kind>:<hash>, print each by digest."""

    configure_logging(verbose)
    chosen = _check(kinds, torch)
    if not registry.strip() or "://" in registry:
        raise UsageError(f"--registry {registry!r} must be a host, host:port or host/path, without a scheme")
    client = _client()
    rows = []
    for img in _build_all(client, chosen, base_image, torch):
        try:
            pushed = push_image(client, img, registry)
        except DockerException as exc:  # its text names the registry and why (ImageBuildError: exit 3 as is)
            raise StageFailed(str(exc)) from exc
        rows.append({**_built_row(img), "pushed": pushed.tag, "digest": pushed.digest, "image": pushed.by_digest})
        if not as_json:
            out.print(f"{pushed.tag}\t{pushed.by_digest}", highlight=False)
    if as_json:
        out.print_json(json.dumps({"registry": registry, "images": rows}))
