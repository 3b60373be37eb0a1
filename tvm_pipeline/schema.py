"""Typed, validated JSON objects: the files we read by key (target files, artifact metadata) are
checked against a schema before any key is used, so that an unknown key, a missing one or a
value of the wrong type is one clear error naming the key and the file, never a crash later.

A schema maps each key to a :class:`Field`: the JSON types it accepts (``list[str]`` style element
types included), whether it is required, and an optional extra rule.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from .errors import InputFileError, PipelineError

_JSON_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "an object", type(None): "null", Any: "any value"}


@dataclass(frozen=True)
class Field:
    kind: Any                                   # str, int, float, list[str], dict, str | None, ...
    required: bool = False
    rule: Callable[[Any], str | None] | None = None   # a reason the value is refused, or None


def _options(kind) -> tuple:
    return typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)


def _describe(kind) -> str:
    words = []
    for option in _options(kind):
        origin, args = typing.get_origin(option), typing.get_args(option)
        if origin is list:
            words.append(f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s")
        else:
            words.append(_JSON_WORDS.get(origin or option, str(option)))
    return " or ".join(words)


def _matches(value, kind) -> bool:
    for option in _options(kind):
        origin = typing.get_origin(option) or option
        if option is Any:
            return True
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if origin is not bool and isinstance(value, bool):
            continue
        if origin is list and isinstance(value, list):
            if all(_matches(v, typing.get_args(option)[0]) for v in value):
                return True
        elif origin is not list and isinstance(value, origin):
            return True
    return False


def check_object(data, schema: dict[str, Field], where: str,
                 error: type[PipelineError] = InputFileError, hint: str | None = None) -> dict:
    """``data`` if it is an object whose keys and values fit ``schema``; else ``error`` naming the
    key and ``where`` (the file, and the path to the object inside it)."""
    if not isinstance(data, dict):
        raise error(f"{where} must be a JSON object, not {_describe(type(data))}.", hint=hint)
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise error(f"{where} has unknown keys {unknown}; the known keys are "
                    f"{sorted(schema)}.", hint=hint)
    for key, field in schema.items():
        if key not in data:
            if field.required:
                raise error(f"{where} lacks the key \"{key}\" ({_describe(field.kind)}).",
                            hint=hint)
            continue
        value = data[key]
        if not _matches(value, field.kind):
            raise error(f"{where}: \"{key}\" must be {_describe(field.kind)}, not {value!r:.80}.",
                        hint=hint)
        reason = field.rule(value) if field.rule else None
        if reason:
            raise error(f"{where}: \"{key}\" {reason} (got {value!r:.80}).", hint=hint)
    return data


def one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of {list(choices)}"


def positive(value) -> str | None:
    return None if value > 0 else "must be > 0"
