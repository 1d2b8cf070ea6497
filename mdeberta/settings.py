"""Typed settings per stage: dataclass defaults < a TOML recipe section < command-line flags.

Each stage declares one dataclass. Its fields carry their help text, so the command-line flags,
the recipe keys and the saved effective settings all come from one declaration.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from typing import Any

from .errors import UserError


class SettingsError(UserError, ValueError):
    """A bad recipe key or value; the message names the file and key."""


def setting(default: Any, help: str, *, group: str = "settings", affects_output: bool = True,
            cli: bool = True, choices=None, metavar: str | None = None):
    """A settings field. ``affects_output=False`` marks run-time knobs (workers, progress) that
    do not change what a stage writes, so changing them does not invalidate finished work;
    ``group`` is the heading its flag appears under in --help."""
    meta = {"help": help, "group": group, "affects_output": affects_output, "cli": cli, "choices": choices,
            "metavar": metavar}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> Any:
    """``int | None`` -> int, ``list[str]`` -> list."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return origin or tp


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def _coerce(cls, name: str, value: Any, where: str, text: bool = False) -> Any:
    """``value`` as the setting's type; ``text``: it is a command-line string, to be parsed."""
    kind = _field_types(cls)[name]
    if value is None:
        return None
    if kind is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise SettingsError(f"{where}: '{name}' must be a list, got {value!r}")
        return value
    if kind is dict:  # only per-language numbers so far: "sw=0.3,ur=0.4" or a TOML table
        if isinstance(value, str):
            try:
                value = dict(item.split("=", 1) for item in value.split(",") if item.strip())
            except ValueError:
                raise SettingsError(f"{where}: '{name}' takes KEY=NUMBER pairs, got {value!r}") from None
        try:
            return {str(k).strip(): float(v) for k, v in dict(value).items()}
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: '{name}' takes KEY=NUMBER pairs, got {value!r}") from None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{where}: '{name}' must be true or false, got {value!r}")
    if text and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise SettingsError(f"{where}: '{name}' must be {kind.__name__}, got {value!r}") from None
    # A recipe's values are typed as the flags' are parsed: an integer setting takes an integer
    # only (never 16.5 or true), a number setting an integer or a float, a text setting a string.
    if isinstance(value, bool) or not isinstance(value, _ACCEPTED.get(kind, (kind,))):
        raise SettingsError(f"{where}: '{name}' must be {kind.__name__}, got {value!r}")
    return kind(value)


_ACCEPTED = {float: (int, float)}  # a float setting also takes an integer; every other type only its own


def _check_choice(cls, name: str, value: Any, where: str) -> None:
    choices = next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("choices")
    if choices and value not in choices:
        raise SettingsError(f"{where}: '{name}' must be one of {', '.join(choices)}, got {value!r}")


def build_settings(cls, section: dict[str, Any], where: str, overrides: dict | None = None):
    """Defaults, then a recipe's ``section`` (``where`` names it in errors), then ``overrides`` (the
    flags a user gave)."""
    values: dict[str, Any] = {}
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in section.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise SettingsError(f"{where}: unknown key '{key}'{hint}")
        values[key] = _coerce(cls, key, value, where)
    for key, value in (overrides or {}).items():
        values[key] = _coerce(cls, key, value, f"--{key.replace('_', '-')}", text=True)
    for key, value in values.items():
        _check_choice(cls, key, value, f"setting '{key}'")
    return cls(**values)


def output_settings(settings) -> dict[str, Any]:
    """The settings that decide a stage's output (what its manifest compares)."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
            if f.metadata.get("affects_output", True)}


def add_settings_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field; flags default to "not given" so recipes are not overridden."""
    types_ = _field_types(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or f.name in skip:
            continue
        group = f.metadata.get("group", "settings")
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        flag = "--" + f.name.replace("_", "-")
        kind = types_[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, (list, dict)) else default
        help_ = f.metadata["help"]
        if "default" not in help_:
            help_ += f" (default: {shown if shown not in (None, '', []) else 'none'})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = f.metadata.get("metavar") or {list: "A,B,...", dict: "K=V,..."}.get(
                kind, f.name.split("_")[-1].upper())
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        groups[group].add_argument(flag, **kwargs)


def given_overrides(args: argparse.Namespace, cls) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}
