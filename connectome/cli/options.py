"""Command-line options generated from a settings dataclass (connectome.settings): one flag per field.

A flag left out is None, so a recipe's value stands unless the flag is given. Values arrive as
strings and are checked by the settings' own validation, the code that also checks recipes and
service jobs, so every source of a setting is refused with the same one-line message.
"""

import json
from pathlib import Path

import click

from connectome.errors import ConnectomeError
from connectome.settings import RunSettings, Spec, check_value, parse_flag


def _help(spec: Spec) -> str:
    text = spec.meta["help"]
    choices = spec.choices()
    if choices is not None:
        text += f" One of: {', '.join(map(str, choices))}."
    if not spec.required and spec.default not in (None, [], ()):
        shown = ",".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
        text += f"  [default: {shown}]"
    return text


def _param(spec: Spec):
    if spec.meta["argument"]:
        return click.argument(spec.name, required=False)
    if spec.kind is bool:
        return click.option(f"{spec.flag}/--no-{spec.flag[2:]}", spec.name, default=None, help=_help(spec))
    metavar = {int: "INTEGER", float: "NUMBER"}.get(spec.kind, "TEXT")
    return click.option(spec.flag, spec.name, default=None, multiple=spec.is_list, metavar=metavar, help=_help(spec))


def settings_options(cls: type[RunSettings], skip: tuple[str, ...] = ()):
    """A decorator adding one click parameter per field of `cls` (none for names in `skip`)."""
    def decorate(f):
        for spec in reversed(cls.specs()):
            if spec.name not in skip:
                f = _param(spec)(f)
        return f
    return decorate


def given(cls: type[RunSettings], params: dict) -> dict:
    """The settings given as flags, each checked on its own, so a bad one is named as its flag."""
    out = {}
    for spec in cls.specs():
        value = params.get(spec.name)
        if value is None or value == ():
            continue
        if spec.is_list:  # repeated, or comma-separated, or both
            value = [parse_flag(spec, v.strip()) for item in value for v in item.split(",") if v.strip()]
        elif not isinstance(value, bool):
            value = parse_flag(spec, value)
        try:
            out[spec.name] = check_value(spec, value)
        except ValueError as e:
            raise ConnectomeError(f"{spec.flag if not spec.meta['argument'] else spec.name.upper()} {e}") from None
    return out


def read_job(path: str) -> dict:
    """A job file: the settings as a JSON object (what the service stores and its worker runs)."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConnectomeError(f"job file {path}: not readable JSON ({type(e).__name__})") from None
    if not isinstance(values, dict):
        raise ConnectomeError(f"job file {path}: must hold a JSON object of settings")
    return values


def build_settings(cls: type[RunSettings], params: dict, recipe: str | None = None, job: str | None = None,
                   extra: dict | None = None):
    """Settings from a recipe or a job file, overridden by the flags that were given."""
    from connectome.recipes import load_recipe

    values, source = {}, cls.KIND
    if recipe:
        values, source = load_recipe(recipe, cls.KIND), f"recipe {recipe}"
    if job:
        values, source = read_job(job), f"job file {job}"
    values.update(extra or {})
    values.update(given(cls, params))
    return cls.from_mapping(values, source)
