"""IAM's policy simulator (``SimulatePrincipalPolicy``) over the policies moto's IAM stores.

moto serves IAM (roles, users, groups, policies) but not the simulator, which ``mlbatch doctor``
asks whether the Airflow worker may ``ecs:RunTask``, ``iam:PassRole`` and so on. This answers
that one operation of IAM's ``query`` protocol (a form-encoded POST, an XML answer in IAM's
shapes, parsed by the real boto3 client) by evaluating the principal's identity policies as
moto holds them in this process: the role's (or the user's and its groups') inline and
attached managed policies.

Evaluation, as IAM's for identity policies: a statement applies when its ``Action`` (or
``NotAction``) and ``Resource`` (or ``NotResource``) match, wildcards ``*`` and ``?`` (actions
case-insensitively), and its ``Condition`` holds on the request's context entries
(``StringEquals``, ``StringLike``, ``ArnEquals``, ``ArnLike``; any other operator, or a key the
request does not give, does not hold). An explicit ``Deny`` wins over any ``Allow``; no
``Allow`` is ``implicitDeny``. Not modelled: permissions boundaries, SCPs, resource policies.

Hook it into :class:`~devtools.devservers.aws_wire.AwsEndpoint` with
``AwsEndpoint([...], query_handlers=iam_query_handlers())``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any
from xml.sax.saxutils import escape

_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
_PRINCIPAL = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):(role|user)/(?:.*/)?([^/]+)$")
QueryHandler = Callable[[dict[str, str]], tuple[int, str]]


class IamSimulatorError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def iam_query_handlers() -> dict[tuple[str, str], QueryHandler]:
    """What :class:`AwsEndpoint` answers itself instead of moto: (signing name, Action) -> handler."""
    return {("iam", "SimulatePrincipalPolicy"): simulate_principal_policy}


def simulate_principal_policy(params: dict[str, str]) -> tuple[int, str]:
    """The form parameters of a ``SimulatePrincipalPolicy`` request -> (HTTP status, XML body)."""
    try:
        documents = _principal_policies(params.get("PolicySourceArn", ""))
        actions = _members(params, "ActionNames")
        if not actions:
            raise IamSimulatorError(400, "ValidationError", "ActionNames must contain at least one action")
        resources = _members(params, "ResourceArns") or ["*"]
        context = _context(params)
        results = [
            (action, resource, evaluate(documents, action, resource, context))
            for action in actions
            for resource in resources
        ]
    except IamSimulatorError as exc:
        return exc.status, _error_xml(exc.code, exc.message)
    return 200, _result_xml(results)


def _members(params: dict[str, str], name: str) -> list[str]:
    """``Name.member.1``, ``Name.member.2``, ... in order (the query protocol's lists)."""
    found = []
    for key, value in params.items():
        m = re.fullmatch(rf"{name}\.member\.(\d+)", key)
        if m:
            found.append((int(m.group(1)), value))
    return [v for _, v in sorted(found)]


def _context(params: dict[str, str]) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for key, value in params.items():
        m = re.fullmatch(r"ContextEntries\.member\.(\d+)\.ContextKeyName", key)
        if m:
            values = _members(params, rf"ContextEntries\.member\.{m.group(1)}\.ContextKeyValues")
            entries[value.lower()] = values
    return entries


def _principal_policies(arn: str) -> list[dict[str, Any]]:
    """Every identity policy document of the role or user ``arn``, as moto stores them."""
    from moto.iam.models import iam_backends

    m = _PRINCIPAL.match(arn)
    if not m:
        raise IamSimulatorError(400, "InvalidInput", f"PolicySourceArn {arn!r} is not a role or user ARN")
    partition, account, kind, name = m.groups()
    backend = iam_backends[account][partition]
    try:
        holders: list[Any] = [backend.get_role(name)] if kind == "role" else [backend.get_user(name)]
    except Exception as exc:  # noqa: BLE001 - moto raises its own NoSuchEntity
        raise IamSimulatorError(404, "NoSuchEntity", f"The {kind} with name {name} cannot be found.") from exc
    if kind == "user":
        holders += backend.get_groups_for_user(name)
    texts: list[str] = []
    for holder in holders:
        texts += list(holder.policies.values())
        for policy in holder.managed_policies.values():
            texts += [v.document for v in policy.versions if v.is_default]
    return [json.loads(t) if isinstance(t, str) else t for t in texts]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statement_matches(st: dict[str, Any], action: str, resource: str, context: dict[str, list[str]]) -> bool:
    if "Action" in st:
        hit = any(fnmatchcase(action.lower(), a.lower()) for a in _as_list(st["Action"]))
    else:
        hit = not any(fnmatchcase(action.lower(), a.lower()) for a in _as_list(st.get("NotAction", [])))
    if not hit:
        return False
    if "Resource" in st:
        hit = any(fnmatchcase(resource, r) for r in _as_list(st["Resource"]))
    else:
        hit = not any(fnmatchcase(resource, r) for r in _as_list(st.get("NotResource", [])))
    return hit and _conditions_hold(st.get("Condition", {}), context)


def _conditions_hold(conditions: dict[str, dict[str, Any]], context: dict[str, list[str]]) -> bool:
    for operator, tests in conditions.items():
        for key, wanted in tests.items():
            given = context.get(key.lower())
            if not given:
                return False
            if operator in ("StringEquals", "ArnEquals"):
                ok = any(g == w for g in given for w in _as_list(wanted))
            elif operator in ("StringLike", "ArnLike"):
                ok = any(fnmatchcase(g, w) for g in given for w in _as_list(wanted))
            else:
                ok = False  # an operator the double does not model never grants
            if not ok:
                return False
    return True


def evaluate(documents: list[dict[str, Any]], action: str, resource: str, context: dict[str, list[str]]) -> str:
    """``allowed``, ``explicitDeny`` or ``implicitDeny`` for one action on one resource."""
    allowed = False
    for doc in documents:
        for st in _as_list(doc.get("Statement", [])):
            if not _statement_matches(st, action, resource, context):
                continue
            if st.get("Effect") == "Deny":
                return "explicitDeny"
            allowed = allowed or st.get("Effect") == "Allow"
    return "allowed" if allowed else "implicitDeny"


def _result_xml(results: list[tuple[str, str, str]]) -> str:
    members = "".join(
        "<member>"
        f"<EvalActionName>{escape(action)}</EvalActionName>"
        f"<EvalResourceName>{escape(resource)}</EvalResourceName>"
        f"<EvalDecision>{decision}</EvalDecision>"
        "<MatchedStatements/><MissingContextValues/>"
        "</member>"
        for action, resource, decision in results
    )
    return (
        f'<SimulatePrincipalPolicyResponse xmlns="{_NS}"><SimulatePrincipalPolicyResult>'
        f"<IsTruncated>false</IsTruncated><EvaluationResults>{members}</EvaluationResults>"
        "</SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>iam-double</RequestId>"
        "</ResponseMetadata></SimulatePrincipalPolicyResponse>"
    )


def _error_xml(code: str, message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{_NS}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>iam-double</RequestId></ErrorResponse>"
    )
