"""docs/spec.md, rendered from the spec's pydantic models (their field descriptions and defaults).

`python -m mlbatch.spec.doc > docs/spec.md`; tests/unit/test_spec.py keeps the file current.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mlbatch.spec import ModelSpec

HIDDEN = {"path", "root"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(defaults below)"
    return f"`{value!r}`" if value not in (None, {}, []) else f"`{value}`"


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for name, field in model.model_fields.items():
            if name in HIDDEN:
                continue
            for tp in [field.annotation, *typing.get_args(field.annotation)]:
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    walk(tp)

    walk(root)
    return seen


def render() -> str:
    lines = [
        "# Model spec reference",
        "",
        "One YAML file per model in `dags/specs/<name>.yaml`. Unknown fields are errors. This page is",
        "generated from `plugins/mlbatch/spec/model.py` (`python -m mlbatch.spec.doc > docs/spec.md`).",
        "",
    ]
    for model in _models(ModelSpec):
        lines += [f"## {model.__name__}", "", "| field | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if name in HIDDEN:
                continue
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
