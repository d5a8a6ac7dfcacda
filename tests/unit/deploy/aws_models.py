"""Checks by AWS's own rules: botocore's service models (the API's shapes) and cfn-lint's IAM grammar.

botocore's ParamValidator checks types, required members, lengths and ranges; it leaves enums
and patterns to the service, so :func:`shape_errors` adds those (the model carries both; the
patterns are Java regexes, hence the ``regex`` module, which reads ``\\p{...}`` classes).
"""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import regex
from botocore.validate import ParamValidator

_SESSION = botocore.session.get_session()


def input_shape(service: str, operation: str) -> Any:
    return _SESSION.get_service_model(service).operation_model(operation).input_shape


def _enum_and_pattern_errors(value: Any, shape: Any, path: str) -> list[str]:
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, item in value.items():
            if name in shape.members:
                errors += _enum_and_pattern_errors(item, shape.members[name], f"{path}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            errors += _enum_and_pattern_errors(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += _enum_and_pattern_errors(item, shape.value, f"{path}[{key!r}]")
    elif shape.type_name == "string" and isinstance(value, str):
        errors += _string_errors(value, shape, path)
    return errors


def _string_errors(value: str, shape: Any, path: str) -> list[str]:
    errors = []
    if shape.enum and value not in shape.enum:
        errors.append(f"{path}: {value!r} is not one of {shape.enum}")
    pattern = shape.metadata.get("pattern")
    if pattern and not regex.fullmatch(_java(pattern), value, regex.DOTALL):
        errors.append(f"{path}: {value!r} does not match {pattern}")
    return errors


def _java(pattern: str) -> str:
    """A Java pattern for Python's ``regex``: each ``\\uXXXX`` escape as the character itself (a
    UTF-16 surrogate pair, as Java writes characters above U+FFFF, as that one character)."""

    def pair(m: re.Match[str]) -> str:
        high, low = int(m.group(1), 16), int(m.group(2), 16)
        return regex.escape(chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)))

    pattern = re.sub(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", pair, pattern, flags=re.IGNORECASE)
    return re.sub(r"\\u([0-9A-Fa-f]{4})", lambda m: regex.escape(chr(int(m.group(1), 16))), pattern)


def shape_errors(service: str, operation: str, request: dict[str, Any]) -> list[str]:
    """Every way ``request`` breaks ``service.operation``'s input shape (empty: valid)."""
    shape = input_shape(service, operation)
    report = ParamValidator().validate(request, shape)
    errors = [report.generate_report()] if report.has_errors() else []
    return errors + _enum_and_pattern_errors(request, shape, operation)


def iam_policy_errors(document: dict[str, Any], *, trust: bool = False) -> list[str]:
    """cfn-lint's IAM rules (statement grammar, known actions per service) on one policy document,
    linted as a CloudFormation managed policy or, with ``trust``, a role's trust policy."""
    from cfnlint.api import ManualArgs, lint

    if trust:
        resource = {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": document}}
    else:
        resource = {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": document}}
    template = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Checked": resource}}
    matches = lint(json.dumps(template), config=ManualArgs(regions=["eu-west-1"]))
    return [f"{m.rule.id} {m.message}" for m in matches]
