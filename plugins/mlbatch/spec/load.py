"""Loading specs: one YAML file (:func:`load_spec`), by name or path (:func:`find_spec`), or every
spec of a folder (:func:`load_all`); every problem of a file is one :class:`SpecError` naming it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from mlbatch.spec.model import MODEL_NAME, ModelSpec, SpecError, project_dir
from mlbatch.spec.query import spec_query_problems


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate one spec file, or raise :class:`SpecError`."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(path, [("", "file not found")]) from None
    except yaml.YAMLError as exc:
        raise SpecError(path, [("", f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        raise SpecError(path, [("", "expected a mapping of fields at the top level")])
    for reserved in ("path", "root"):
        if reserved in raw:
            raise SpecError(path, [(reserved, "extra inputs are not permitted")])
    try:
        spec = ModelSpec.model_validate({**raw, "path": path.resolve(), "root": project_dir()})
    except ValidationError as exc:
        raise SpecError(path, _problems(exc)) from None
    if spec.name != path.stem:
        raise SpecError(path, [("name", f"{spec.name!r} must match the file name {path.stem!r}")])
    # The SQL files exist and render (Jinja only, cheap): a wrong path or a template error is this
    # spec's load error, at DAG import and in the CLI, rather than a failed task on some later day.
    problems = spec_query_problems(spec, datetime.now(UTC).date().isoformat())
    if problems:
        raise SpecError(path, problems)
    return spec


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors():
        # Drop union-branch names (e.g. "FileSource") that pydantic puts in the location.
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper())]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; the fields are listed in docs/spec.md)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        problems.append((".".join(loc), msg.removeprefix("Value error, ")))
    return problems


def find_spec(name_or_path: str, specs_dir: Path) -> ModelSpec:
    """SPEC on the command line: a path to a YAML file, or a model name in ``specs_dir``."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return load_spec(candidate)
    if not re.match(MODEL_NAME, name_or_path):
        raise SpecError(name_or_path, [("", "not a spec file and not a valid model name")])
    return load_spec(specs_dir / f"{name_or_path}.yaml")


def load_all(specs_dir: Path) -> list[ModelSpec]:
    return [load_spec(p) for p in sorted(specs_dir.glob("*.yaml"))]
