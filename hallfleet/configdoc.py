"""Configuration rendered from the pydantic models themselves: annotated TOML (the example configs, and the
effective configuration with secrets masked) and the key reference (docs/configuration.md).

The rule: no key is described anywhere but in its model's ``Field(description=...)``. The examples and the
reference are generated from the models and a test regenerates them and compares with the committed files,
so a key added, renamed or removed in code cannot leave the documentation behind.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator
from datetime import date, datetime, time
from enum import Enum
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MASK = "********"
# A key whose value is itself a secret (not a *_file naming one): masked by `hallfleet config show`.
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_?key|authorization|access_token|^key$|^sign$)", re.I)
_SECRET_QUERY = re.compile(r"(key|token|secret|sign|password|access_token)", re.I)
WIDTH = 116  # comment lines wrap here, like the code


# -- TOML values ------------------------------------------------------------------------------------------
def toml_value(value: Any) -> str:
    """One TOML value: strings as JSON strings (valid TOML basic strings), lists and inline tables of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Enum):
        return toml_value(value.value)
    if isinstance(value, PurePath | date | datetime | time):
        return toml_value(str(value) if isinstance(value, PurePath) else value.isoformat())
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(toml_value(v) for v in items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)


def _comment(text: str, indent: str = "") -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(indent) + 2 + len(line) + 1 + len(w) > WIDTH:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return [f"{indent}# {x}" for x in lines]


# -- a model instance as annotated TOML -------------------------------------------------------------------
def _is_model(value: Any) -> bool:
    return isinstance(value, BaseModel)


def _is_table_of_models(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(_is_model(v) for v in value.values())


def _is_array_of_models(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(_is_model(v) for v in value)


def _doc_of(field: FieldInfo | None, model: BaseModel) -> str:
    if field is not None and field.description:
        return field.description
    doc = (type(model).__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


def render_toml(model: BaseModel, *, mask: bool = False, skip: frozenset[str] = frozenset()) -> str:
    """``model`` as TOML that loads back into the same model: each key with its description above it, unset
    optional keys as commented lines, sub-models as tables after the table's own keys (TOML's order).
    ``mask``: secrets replaced by ``MASK`` (the output then shows, it no longer loads)."""
    return "\n".join(_table(model, [], mask, skip)).strip("\n") + "\n"


def _table(model: BaseModel, path: list[str], mask: bool, skip: frozenset[str]) -> Iterator[str]:
    later: list[tuple[list[str], BaseModel, FieldInfo | None, bool]] = []
    for name, field in type(model).model_fields.items():
        if not path and name in skip:
            continue
        value = getattr(model, name)
        if _is_model(value):
            later.append(([*path, name], value, field, False))
        elif _is_table_of_models(value):
            later += [([*path, name, str(k)], v, field, False) for k, v in value.items()]
        elif _is_array_of_models(value):
            later += [([*path, name], v, field, True) for v in value]
        else:
            if field.description:
                yield from _comment(field.description)
            if value is None:
                yield f"# {name} = ...  (unset)"
            else:
                yield f"{_key(name)} = {toml_value(mask_secrets(value, name) if mask else value)}"
    for sub_path, sub, info, array in later:
        yield ""
        if doc := _doc_of(info, sub):
            yield from _comment(doc)
        header = ".".join(_key(p) for p in sub_path)
        yield f"[[{header}]]" if array else f"[{header}]"
        yield from _table(sub, sub_path, mask, frozenset())


# -- secrets --------------------------------------------------------------------------------------------------
def mask_secrets(data: Any, key: str = "") -> Any:
    """A config dump with every secret replaced by ``MASK``: values of secret-named keys (not ``*_file``, whose
    value is a path), the password in a URL's userinfo and secret-named query parameters (robot webhooks carry
    their key in the query; a database URL may carry a password)."""
    if isinstance(data, dict):
        return {k: mask_secrets(v, str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [mask_secrets(v, key) for v in data]
    if data is not None and _SECRET_KEY.search(key) and not key.endswith(("_file", "_dir")):
        return MASK
    return mask_url(data) if isinstance(data, str) else data


def mask_url(text: str) -> str:
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# -- the reference: every key of a model tree, from the classes -----------------------------------------------
def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> list[Any]:
    annotation = _strip(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [_strip(a) for a in get_args(annotation)]
    return [annotation]


def sub_models(annotation: Any) -> list[type[BaseModel]]:
    """The model classes a field holds: itself, in Optional/Union (discriminated or not), list or dict."""
    found: list[type[BaseModel]] = []
    for member in _members(annotation):
        origin = get_origin(member)
        if origin in (list, tuple, dict):
            inner = get_args(member)[-1] if get_args(member) else None
            found += sub_models(inner) if inner is not None else []
        elif isinstance(member, type) and issubclass(member, BaseModel):
            found.append(member)
    return found


def type_name(annotation: Any) -> str:
    parts = []
    for member in _members(annotation):
        origin = get_origin(member)
        if member is type(None):
            continue
        if origin is Literal:
            parts.append(" \\| ".join(json.dumps(a, ensure_ascii=False) for a in get_args(member)))
        elif origin in (list, tuple):
            args = [a for a in get_args(member) if a is not Ellipsis]
            parts.append(f"list of {type_name(args[0])}" if args else "list")
        elif origin is dict:
            parts.append(f"table of {type_name(get_args(member)[1])}")
        elif isinstance(member, type) and issubclass(member, BaseModel):
            parts.append(f"[{member.__name__}](#{member.__name__.lower()})")
        elif isinstance(member, type):
            parts.append(
                {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
                    member.__name__, "path" if issubclass(member, PurePath) else member.__name__
                )
            )
        else:
            parts.append(str(member).replace("typing.", ""))
    return " or ".join(parts)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "computed"
        if _is_model(value) or _is_array_of_models(value):
            return "see its section" if _is_model(value) else "built in (see the code)"
        if not isinstance(value, list | dict | tuple):
            return "computed at start"  # e.g. the host name: never the same on two machines
        default = value
    else:
        default = field.default
    if default is None or default is PydanticUndefined:
        return "unset"
    return "`" + toml_value(default).replace("|", "\\|") + "`"


def reference(title: str, root: type[BaseModel], intro: str) -> list[str]:
    """Markdown: one table per model class of the tree, each key with its type, default and description."""
    lines = [f"## {title}", "", intro, ""]
    seen: set[type[BaseModel]] = set()
    queue: list[tuple[type[BaseModel], str]] = [(root, "(top level)")]
    while queue:
        cls, where = queue.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        lines += [f"### {cls.__name__}", "", f"Where: `{where}`", ""]
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        if doc and not doc.startswith(("Usage docs", "Create a new model", "Base class")):
            lines += [doc, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in cls.model_fields.items():
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name}` | {type_name(field.annotation)} | {default_text(field)} | {desc} |")
            prefix = "" if where == "(top level)" else f"{where}."
            queue += [(m, f"{prefix}{name}") for m in sub_models(field.annotation)]
        lines.append("")
    return lines


def undocumented(root: type[BaseModel]) -> list[str]:
    """Keys of the tree without a description: the reference would have a hole."""
    missing, seen, queue = [], set(), [root]
    while queue:
        cls = queue.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for name, field in cls.model_fields.items():
            if not field.description and not sub_models(field.annotation):
                missing.append(f"{cls.__module__}.{cls.__name__}.{name}")
            queue += sub_models(field.annotation)
    return missing


def relative(path: Path, to: Path) -> str:
    try:
        return str(path.relative_to(to))
    except ValueError:
        return str(path)
