"""Build the images (train, score: the jobs'; airflow: the scheduler's and workers'), tagged by a
hash of what goes into them, and push them to a registry.

The tag is ``mlbatch/<kind>:<hash>`` where the hash covers the Dockerfile, the dependency set
(``requirements/jobs.txt`` or ``requirements/airflow.txt``), every file copied in (``jobs/`` for
a job image; ``dags/``, ``plugins/``, ``sql/`` for Airflow's), the build arguments and the base
image's id: unchanged code skips the build altogether, and a code change only re-runs the
image's last layers (Docker's layer cache keeps the pinned installs). The tag is baked into the
image as ``MLBATCH_IMAGE`` and the hash as ``MLBATCH_CODE_VERSION``: a job writes both into its
``lineage.json``. The context is assembled in a temporary folder with the repo's own paths plus
``docker/build/ca.crt`` (the CA bundle pip trusts during the build; it stays in the build
stage) and ``docker/build/wheels/`` (a torch wheel when ``torch="wheel"``).

A push tags ``mlbatch/<kind>:<hash>`` as ``<registry>/mlbatch/<kind>:<hash>`` and returns the
digest the registry reports, so task definitions can name the image by digest. Credentials for
the registry are Docker's own (``docker login``, e.g. with ``aws ecr get-login-password``).

    mlbatch images build train score --base-image mlbatch/debian-base:12 [--torch wheel]
    mlbatch images push train score --registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com
    python -m mlbatch.backends.launchers.images train score airflow --base-image mlbatch/debian-base:12
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import certifi
import docker
from docker.errors import ImageNotFound

from mlbatch.errors import StageFailed
from mlbatch.spec import REPO_ROOT

if TYPE_CHECKING:
    from docker import DockerClient

log = logging.getLogger(__name__)

JOB_KINDS = ("train", "score")
KINDS = (*JOB_KINDS, "airflow")
TORCH_MODES = ("none", "pypi", "wheel")
TORCH_VERSION = "2.13.0"
DEFAULT_CA = "/etc/ssl/certs/ca-certificates.crt"


class ImageBuildError(StageFailed, RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltImage:
    kind: str
    tag: str
    built: bool  # False: an image with this content hash existed, nothing was built
    seconds: float
    size_bytes: int


@dataclass(frozen=True)
class PushedImage:
    kind: str
    tag: str  # <registry>/mlbatch/<kind>:<hash>
    digest: str  # sha256:...
    seconds: float

    @property
    def by_digest(self) -> str:
        """``<registry>/mlbatch/<kind>@sha256:...``: what a task definition should name."""
        return f"{self.tag.rsplit(':', 1)[0]}@{self.digest}"


def _tree(folder: str) -> list[Path]:
    return sorted(
        p.relative_to(REPO_ROOT)
        for p in (REPO_ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def context_files(kind: str) -> list[Path]:
    """Repo-relative paths of everything the ``kind`` image is made of (besides the base)."""
    if kind not in KINDS:
        raise ValueError(f"image kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "airflow":
        return [
            Path("docker/airflow.Dockerfile"),
            Path("docker/airflow-entrypoint.sh"),
            Path("requirements/airflow.txt"),
            *_tree("dags"),
            *_tree("plugins"),
            *_tree("sql"),
            Path("jobs/__init__.py"),  # the jobs' modules mlbatch imports (standard library only)
            Path("jobs/contract.py"),
            Path("jobs/cpus.py"),
        ]
    # train-cuda.txt: the CUDA wheels torch's PyPI build pulls, pinned (the train image's TORCH=pypi).
    extra = [Path("docker/train-cuda.txt")] if kind == "train" else []
    return [Path(f"docker/{kind}.Dockerfile"), Path("requirements/jobs.txt"), *extra, *_tree("jobs")]


def content_hash(kind: str, build_args: dict[str, str], base_id: str, wheel: Path | None) -> str:
    h = hashlib.sha256()
    for rel in context_files(kind):
        h.update(str(rel).encode() + b"\0" + (REPO_ROOT / rel).read_bytes() + b"\0")
    for k in sorted(build_args):
        h.update(f"{k}={build_args[k]}\0".encode())
    h.update(base_id.encode())
    if wheel is not None:  # the file name carries the version; the size catches a different build
        h.update(f"{wheel.name}:{wheel.stat().st_size}".encode())
    return h.hexdigest()[:16]


def ca_bundle() -> Path:
    """The CA bundle pip uses on this machine (a proxy's CA included), for pip inside the build."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), DEFAULT_CA):
        if candidate and Path(candidate).is_file():
            return Path(candidate)

    return Path(certifi.where())


def torch_wheel(directory: Path | None = None) -> Path:
    """The torch CPU wheel, fetched with pip (from the local wheel folder where pip has one)."""
    directory = directory or Path(tempfile.gettempdir()) / "mlbatch-wheels"
    found = sorted(directory.glob(f"torch-{TORCH_VERSION}*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                f"torch=={TORCH_VERSION}",
                "-d",
                str(directory),
            ],
            check=True,
        )
        found = sorted(directory.glob(f"torch-{TORCH_VERSION}*.whl"))
    if not found:
        raise ImageBuildError(f"pip download torch=={TORCH_VERSION} left no wheel in {directory}")
    return found[0]


def _assemble(kind: str, into: Path, wheel: Path | None) -> None:
    for rel in context_files(kind):
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, into / rel)
    build = into / "docker" / "build"
    (build / "wheels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_bundle(), build / "ca.crt")
    if wheel is not None:
        try:
            os.link(wheel, build / "wheels" / wheel.name)
        except OSError:
            shutil.copy2(wheel, build / "wheels" / wheel.name)


def build_image(
    client: DockerClient,
    kind: str,
    *,
    base_image: str | None = None,
    torch: str = "none",
    wheel: Path | None = None,
    repository: str | None = None,
) -> BuiltImage:
    """Build ``mlbatch/<kind>:<content hash>`` unless it exists; the build's output goes to the log.

    ``torch`` applies to the job images only (the Airflow image never holds torch).
    """
    if torch not in TORCH_MODES:
        raise ValueError(f"torch={torch!r} is not one of {TORCH_MODES}")
    if kind not in KINDS:
        raise ValueError(f"image kind {kind!r} is not one of {', '.join(KINDS)}")
    if torch == "wheel" and kind != "airflow":
        wheel = wheel or torch_wheel()
    else:
        wheel = None
    build_args = {} if kind == "airflow" else {"TORCH": torch}
    base_id = ""
    if base_image:
        build_args["BASE_IMAGE"] = base_image
        found = client.images.get(base_image).id  # a missing base fails here, by name
        assert found is not None  # Docker gives every image an id
        base_id = found
    digest = content_hash(kind, build_args, base_id, wheel)
    tag = f"{repository or f'mlbatch/{kind}'}:{digest}"

    try:
        image = client.images.get(tag)
        return BuiltImage(kind, tag, built=False, seconds=0.0, size_bytes=image.attrs["Size"])
    except ImageNotFound:
        pass
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    with tempfile.TemporaryDirectory(prefix=f"mlbatch-{kind}-context-") as ctx:
        _assemble(kind, Path(ctx), wheel)
        stream = client.api.build(
            path=ctx,
            dockerfile=f"docker/{kind}.Dockerfile",
            tag=tag,
            # The tag and hash go into the image (MLBATCH_IMAGE, MLBATCH_CODE_VERSION): a job
            # records what ran it. Not part of the hash: they are derived from it.
            buildargs={**build_args, "CODE_VERSION": digest, "IMAGE": tag},
            network_mode="host",  # pip reaches PyPI the way the host does; no bridge needed
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                raise ImageBuildError(
                    f"building {tag} from docker/{kind}.Dockerfile failed: {chunk['error'].strip()}\n"
                    + "\n".join(f"    | {line}" for line in tail)
                )
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    tail.append(line)
                    log.info("[build %s] %s", kind, line)
    seconds = time.monotonic() - start
    size = client.images.get(tag).attrs["Size"]
    log.info("built %s in %.0f s (%.0f MiB)", tag, seconds, size / 2**20)
    return BuiltImage(kind, tag, built=True, seconds=seconds, size_bytes=size)


def push_image(client: DockerClient, image: BuiltImage, registry: str) -> PushedImage:
    """Tag ``image`` as ``<registry>/<repository>:<hash>``, push it and return the registry's digest."""
    registry = registry.rstrip("/")
    if not registry or "://" in registry:
        raise ValueError(f"registry {registry!r} must be a host[:port][/path] such as 127.0.0.1:5000, without a scheme")
    repository, version = image.tag.rsplit(":", 1)
    target = f"{registry}/{repository}"
    client.images.get(image.tag).tag(target, version)
    start = time.monotonic()
    digest = None
    for chunk in client.api.push(target, version, stream=True, decode=True):
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise ImageBuildError(f"pushing {target}:{version} to {registry} failed: {str(detail).strip()}")
        aux = chunk.get("aux") or {}
        if aux.get("Digest"):
            digest = aux["Digest"]
        elif chunk.get("status") and chunk.get("progressDetail") in (None, {}):
            log.info("[push %s] %s", image.kind, " ".join(str(chunk.get(k, "")) for k in ("id", "status")).strip())
    if digest is None:
        raise ImageBuildError(f"pushing {target}:{version} to {registry} ended without a digest from the registry")
    seconds = time.monotonic() - start
    log.info("pushed %s:%s (%s) in %.0f s", target, version, digest, seconds)
    return PushedImage(image.kind, f"{target}:{version}", digest, seconds)


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(
        prog="python -m mlbatch.backends.launchers.images", description=__doc__.split("\n")[0]
    )
    parser.add_argument("kinds", nargs="+", choices=KINDS)
    parser.add_argument("--base-image", help="BASE_IMAGE build arg (default: the Dockerfile's)")
    parser.add_argument("--torch", choices=TORCH_MODES, default="none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = docker.from_env(timeout=600)
    for kind in args.kinds:
        img = build_image(client, kind, base_image=args.base_image, torch=args.torch)
        verb = "built" if img.built else "up to date"
        print(f"{img.tag}\t{verb}\t{img.seconds:.0f} s\t{img.size_bytes / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
