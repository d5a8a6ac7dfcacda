"""``mlbatch models``: list a model's versions, approve or reject one waiting for approval,
promote one by hand, roll back production.

Who made a manual change is ``MLBATCH_USER`` or, failing that, the login name; it is stored in
the version's ``reason`` together with the ``--reason`` text. A change the registry refuses
raises :class:`~mlbatch.stages.registry.RegistryError`, which the CLI prints and exits 2 with.
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Annotated, Any

import typer
from rich.table import Table

from mlbatch.backends.appdb import schema
from mlbatch.backends.env import Environment
from mlbatch.cli.common import load_spec_or_exit, out
from mlbatch.stages import registry

models_app = typer.Typer(help="List, approve, reject, promote and roll back a model's versions.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _who() -> str:
    try:
        return os.environ.get("MLBATCH_USER") or getpass.getuser()
    except OSError:  # no login name in some containers
        return "unknown"


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def _row(v: Any) -> dict[str, Any]:
    return {
        "version": v.version,
        "family": v.family,
        "status": v.status,
        "metric": v.metric,
        "value": v.value,
        "created_at": _iso(v.created_at),
        "decided_at": _iso(v.decided_at),
        "reason": v.reason,
        "artifact_uri": v.artifact_uri,
    }


@models_app.command("list")
def models_list(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every registered version of the model, oldest first, with its status and gate metric."""

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    rows = registry.versions(env.appdb, model.name) if env.appdb.has_table(schema.model_versions.name) else []
    if as_json:
        print(json.dumps({"model": model.name, "versions": [_row(v) for v in rows]}, indent=2))
        return
    table = Table("version", "status", "metric", "created", "decided", "reason", title=f"{model.name} versions")
    for v in rows:
        table.add_row(
            v.version,
            v.status,
            f"{v.metric}={v.value:.4f}",
            str(v.created_at),
            str(v.decided_at or "-"),
            v.reason or "",
        )
    out.print(table if rows else f"{model.name}: no versions registered")


@models_app.command("promote")
def models_promote(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    version: Annotated[str, typer.Argument(help="The version to put in production.")],
    reason: Annotated[str, typer.Option(help="Why (stored with the version, with who did it).")],
    force: Annotated[bool, typer.Option("--force", help="Promote even a version the gate rejected.")] = False,
) -> None:
    """Put VERSION in production by hand; the current production version is retired."""

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    env.appdb.ensure_schema()
    mv = registry.promote(env.appdb, model.name, version, reason, by=_who(), force=force)
    out.print(f"{model.name} {mv.version} is in production ({mv.metric}={mv.value:.4f}): {mv.reason}", highlight=False)


@models_app.command("rollback")
def models_rollback(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    reason: Annotated[str, typer.Option(help="Why (stored with the version).")] = "",
) -> None:
    """Re-promote the most recently retired version; the current production version is retired."""

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    env.appdb.ensure_schema()
    mv, previous = registry.rollback(env.appdb, model.name, reason, by=_who())
    was = f" (was {previous.version})" if previous else ""
    out.print(f"{model.name} rolled back to {mv.version}{was}: {mv.metric}={mv.value:.4f}", highlight=False)


def _decide(spec: str, version: str, comment: str, *, approved: bool) -> None:

    env = Environment.from_env()
    model = load_spec_or_exit(spec, env)
    env.appdb.ensure_schema()
    mv = registry.decide_approval(env.appdb, model.name, version, approved=approved, by=_who(), comment=comment)
    out.print(f"{model.name} {mv.version} is {mv.status}: {mv.reason}", highlight=False)
    out.print(
        "  (an approve_promotion task still waiting in Airflow follows this decision when it is answered or times out)",
        highlight=False,
    )


@models_app.command("approve")
def models_approve(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    version: Annotated[str, typer.Argument(help="A version waiting for approval (status pending_approval).")],
    comment: Annotated[str, typer.Option(help="Why (stored with the version, with who decided).")] = "",
) -> None:
    """Approve a version the model gate passed: it goes to production, the champion is retired."""
    _decide(spec, version, comment, approved=True)


@models_app.command("reject")
def models_reject(
    spec: Annotated[str, typer.Argument(help="Spec file or model name.")],
    version: Annotated[str, typer.Argument(help="A version waiting for approval (status pending_approval).")],
    comment: Annotated[str, typer.Option(help="Why (stored with the version, with who decided).")] = "",
) -> None:
    """Reject a version waiting for approval: the champion stays in production."""
    _decide(spec, version, comment, approved=False)
