"""A person approves a promotion: Airflow's human-in-the-loop ``ApprovalOperator``, told what to
show and what a decision does.

With ``train.approval.required`` the model gate leaves a passing candidate ``pending_approval``
in the registry, and the train DAG's ``approve_promotion`` task asks a person (the UI's
"Required actions"): the candidate against production, metric by metric, with its label sync
and a link to its report. The decision goes to the registry (:func:`registry.decide_approval`):
Approve promotes, Reject or no answer within ``train.approval.timeout_hours`` keeps the
champion; who decided, when and their comment are stored with the version.

``mlbatch models approve|reject`` decides from the CLI instead; the waiting task then follows the
registry (the first decision stands) when it is answered or times out.

On Airflow 3.3 the task waits in the ``awaiting_input`` state: no worker slot, no triggerer.
Imported by DAG files at parse time: nothing heavy at the top.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param

from mlbatch.airflow.operators import run_context

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlbatch.stages.context import RunContext
    from mlbatch.stages.registry import ModelVersion

log = logging.getLogger(__name__)

#: The longest a presigned S3 link may live (SigV4's limit).
MAX_LINK_S = 7 * 24 * 3600


class PromotionApprovalOperator(ApprovalOperator):
    """Ask a person to approve the run's candidate; record the answer in the registry."""

    ui_color = "#fff3cd"
    # Subject and body are built from the registry when the task runs, never templated: a metric
    # or a comment holding "{{" must be shown, not rendered.
    template_fields = ()

    def __init__(self, *, spec_path: str, response_timeout: timedelta, **kwargs: Any):
        # The DAG hands its run params (dry_run, force_retrain, ...) in too: they are not part of
        # the question, and this step reads none of them.
        kwargs.pop("params", None)
        params = {
            "comment": Param(
                None,
                type=["null", "string"],  # optional: the buttons work without one
                title="Comment",
                description="Why you approve or reject; stored with the version in the registry.",
            ),
        }
        super().__init__(
            subject="Approve the promotion?",  # replaced at run time
            defaults=self.REJECT,  # no answer in time: the champion stays
            params=params,
            response_timeout=response_timeout,
            **kwargs,
        )
        self.spec_path = spec_path

    def execute(self, context: Context) -> Any:  # the XCom value: a small summary, or the answer
        # Task time only: DAG files import this module on every parse (the DAG-files contract in pyproject.toml).
        from mlbatch.stages import registry
        from mlbatch.stages.train import approval_request

        ctx = run_context(self.spec_path, context)
        version = ctx.load_state("train", "run the train stage first")["version"]
        with ctx.env.appdb.connect() as conn:
            mv = registry.get(conn, ctx.model, version)
        if mv is None or mv.status != "pending_approval":
            status = mv.status if mv else "not registered"
            log.info("%s %s is %s: nothing to approve", ctx.model, version, status)
            return {"version": version, "status": status, "asked": False}
        gate = context["ti"].xcom_pull(task_ids="model_gate") or {}
        request = approval_request(ctx, report_link(ctx, gate.get("report"), self.response_timeout))
        self.subject, self.body = request["subject"], request["body"]
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" in event:  # no defaults reached it: the base class raises with the reason
            return super().execute_complete(context=context, event=event)
        # Task time only: DAG files import this module on every parse (the DAG-files contract in pyproject.toml).
        from mlbatch.stages import registry

        ctx = run_context(self.spec_path, context)
        version = ctx.load_state("train", "run the train stage first")["version"]
        user = event.get("responded_by_user") or {}
        timed_out = bool(event.get("timedout")) or not user
        chosen = list(event.get("chosen_options") or [])
        comment = str((event.get("params_input") or {}).get("comment") or "")
        mv: ModelVersion | None
        try:
            mv = registry.decide_approval(
                ctx.env.appdb,
                ctx.model,
                version,
                approved=chosen == [self.APPROVE],
                by=str(user.get("name") or user.get("id") or "unknown"),
                comment=comment,
                timed_out=timed_out,
            )
            log.info("%s %s: %s (%s)", ctx.model, version, mv.status, mv.reason)
        except registry.RegistryError as exc:
            with ctx.env.appdb.connect() as conn:
                mv = registry.get(conn, ctx.model, version)
            log.warning("%s; the registry's decision stands: %s", exc, mv.status if mv else "?")
        # Downstream (the model asset's announcement) follows the registry, not only the button.
        outcome = self.APPROVE if mv is not None and mv.status == "production" else self.REJECT
        return super().execute_complete(context=context, event={**event, "chosen_options": [outcome]})


def report_link(ctx: RunContext, uri: str | None, valid_for: timedelta | None) -> str | None:
    """A link a browser can open: a presigned GET for S3 (as long as the question stands, at
    most 7 days), the URI itself otherwise."""
    if not uri or not uri.startswith("s3://"):
        return uri
    # Task time only: DAG files import this module on every parse (the DAG-files contract in pyproject.toml).
    from mlbatch.backends.store import s3_client

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    seconds = int(min(valid_for.total_seconds() if valid_for else MAX_LINK_S, MAX_LINK_S))
    try:
        link: str = s3_client().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds
        )
        return link
    except Exception:  # a link is a convenience; the question must still be asked
        log.exception("could not presign %s", uri)
        return uri
