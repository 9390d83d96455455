"""Settings declared once: a run's hyperparameters are dataclass fields that carry their own default,
help text, valid range and whether they enter the run's digest.

Everything else is generated from those fields: the command-line options (connectome.cli.options),
the keys a recipe may hold, the service's job schema and its validation. So a recipe with
`calib_samples: abc`, a job with `"tolerance": Infinity` and a flag `--batch-size 0` are refused by
the same code, with one line that names the setting. open_lth's hparams dataclasses work this way.

A run folder is named by a hash of the settings that decide its numbers (`digest`); runtime settings
(device, threads, how often to evaluate, ...) change no decision and may differ on resume.
"""

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from connectome.errors import ConnectomeError


def setting(default: Any = MISSING, help: str = "", *, runtime: bool = False, choices: Callable[[], list] | list | None = None,
            minimum: float | None = None, maximum: float | None = None, above: float | None = None,
            below: float | None = None, argument: bool = False, path: bool = False, server: bool = True,
            hashed_when_set: bool = False, legacy: Any = MISSING, applies: Callable | None = None) -> Any:
    """A dataclass field that is a setting.

    runtime: changes no decision, so it stays out of the digest. choices: the allowed values (or a
    function that lists them, for registries). minimum/maximum: inclusive bounds; above/below:
    exclusive ones. argument: the command's positional argument rather than a flag. path: names a
    file or folder (the service checks it lies under a data root). server: a service job may set it.
    hashed_when_set: a setting added after runs were named enters the digest only at a value other than
    its default, so every earlier run keeps its digest (its folder name, and its resume). legacy: with
    hashed_when_set, the value earlier runs behaved as, where the default has since changed: the
    setting then enters the digest at any other value, the new default included. applies: a function
    of the settings, true where this one decides anything (the learned criterion's settings decide
    nothing in a greedy run): elsewhere it stays out of the digest and of the differences a resume
    reports."""
    meta = {"help": help, "runtime": runtime, "choices": choices, "minimum": minimum, "maximum": maximum,
            "above": above, "below": below, "argument": argument, "path": path, "server": server,
            "hashed_when_set": hashed_when_set, "legacy": default if legacy is MISSING else legacy,
            "applies": applies}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Spec:
    """What a field says about itself, resolved once per settings class."""
    name: str
    kind: type  # bool, int, float or str
    is_list: bool
    optional: bool  # None is a valid value
    required: bool  # no default
    default: Any
    meta: dict

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def choices(self) -> list | None:
        c = self.meta["choices"]
        return c() if callable(c) else c


def _resolve(tp) -> tuple[type, bool, bool]:
    """(scalar type, is a list, accepts None) of an annotation such as `int | None` or `list[str]`."""
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


def specs(cls) -> list[Spec]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, is_list, optional = _resolve(hints[f.name])
        required = f.default is MISSING and f.default_factory is MISSING
        default = f.default_factory() if f.default_factory is not MISSING else (None if required else f.default)
        out.append(Spec(f.name, kind, is_list, optional, required, default, dict(f.metadata)))
    return out


_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
# Every count ends in an int64 somewhere (a tensor, a C long, a float product): a Python int of 400
# digits would pass a minimum and then overflow wherever it is first multiplied by a float.
INT64 = 2**63 - 1


# Of a value echoed in a message: a megabyte value must not make a megabyte "one line", and a name of a
# dozen characters that repr escapes (\U000e0000 each) still shows whole.
SHOWN_CHARS = 128


def shown(value: Any) -> str:
    """A value as a message echoes it: whole where short, else its start and its length."""
    text = repr(value)
    if isinstance(value, int) and len(text) > 24:
        return f"{text[:8]}... ({len(text)} digits)"
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS - 28]}... ({len(text):,} characters)"


def shown_all(values: list, most: int = 5) -> str:
    """Several values echoed (unknown keys, say): the first few, and how many more."""
    text = ", ".join(map(shown, values[:most]))
    return text if len(values) <= most else f"{text} and {len(values) - most:,} more"


def _scalar(spec: Spec, value: Any) -> Any:
    """One value, checked against the field's type, range and choices; the message names no field."""
    kind = spec.kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -INT64 - 1 <= value <= INT64:
            raise ValueError(f"must be an integer of 64 bits (at most {INT64:,} in size), got {shown(value)}")
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:  # an integer past what a float holds: as infinite as inf
                raise ValueError(f"must be {_KIND_WORDS[float]}, got {shown(value)}") from None
            if not math.isfinite(value):
                raise ValueError(f"must be {_KIND_WORDS[float]}, got {shown(value)}")
    else:
        ok = isinstance(value, str)
        if ok and "\0" in value:
            raise ValueError("holds a NUL character")
    if not ok:
        raise ValueError(f"must be {_KIND_WORDS[kind]}, got {shown(value)}")
    m = spec.meta
    if m["minimum"] is not None and value < m["minimum"]:
        raise ValueError(f"must be at least {m['minimum']:g}, got {shown(value)}")
    if m["maximum"] is not None and value > m["maximum"]:
        raise ValueError(f"must be at most {m['maximum']:g}, got {shown(value)}")
    if m["above"] is not None and not value > m["above"]:
        raise ValueError(f"must be above {m['above']:g}, got {shown(value)}")
    if m["below"] is not None and not value < m["below"]:
        raise ValueError(f"must be below {m['below']:g}, got {shown(value)}")
    choices = spec.choices()
    if choices is not None and value not in choices:
        raise ValueError(f"must be one of {', '.join(map(str, choices))}, got {shown(value)}")
    return value


def check_value(spec: Spec, value: Any) -> Any:
    """A value as the field holds it; raises ValueError with a message that names no field."""
    if value is None:
        if spec.optional:
            return None
        raise ValueError("must be given" if spec.required else "may not be null")
    if spec.is_list:
        if isinstance(value, str):  # "a,b" from a flag or a recipe
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be a list, got {shown(value)}")
        return [_scalar(spec, v) for v in value]
    return _scalar(spec, value)


def parse_flag(spec: Spec, text: str) -> Any:
    """A command-line string as the field's type (YAML and JSON values come typed already). Numbers
    are ASCII, as in YAML and JSON: Python's int() and float() would read other scripts' digits too."""
    if not isinstance(text, str):  # a click option that converts its own value (train's --epochs)
        return text
    if not text.isascii():
        return text  # check_value refuses it with the usual message
    if spec.kind is int:
        try:
            return int(text)
        except ValueError:
            return text  # check_value refuses it with the usual message
    if spec.kind is float:
        try:
            return float(text)
        except ValueError:
            return text
    return text


@dataclass
class RunSettings:
    """Base of every command's settings: validation, digest, runtime fields, the run folder."""

    KIND: ClassVar[str] = ""  # the recipe kind and the command's name
    DIGEST_CHARS: ClassVar[int] = 8  # of the digest in the default run folder's name

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def specs(cls) -> list[Spec]:
        return specs(cls)

    @classmethod
    def from_mapping(cls, values: dict, source: str = "settings", allow: set[str] = frozenset()):
        """Validated settings from a recipe, a job or flags. Unknown keys, wrong types, non-finite
        numbers, values out of range: ConnectomeError, one line naming `source` and the setting.
        Keys in `allow` are ignored (the caller handles them)."""
        if not isinstance(values, dict):
            raise ConnectomeError(f"{source}: must be a mapping of setting names to values")
        by_name = {s.name: s for s in cls.specs()}
        unknown = sorted(k for k in values if k not in by_name and k not in allow)
        if unknown:
            raise ConnectomeError(f"{source}: unknown setting {shown_all(unknown)}; "
                                  f"the settings are {', '.join(sorted(by_name))}")
        checked = {}
        for name, spec in by_name.items():
            if name not in values:
                if spec.required:
                    where = "an argument" if spec.meta["argument"] else spec.flag
                    raise ConnectomeError(f"{source}: {name} is required ({where}, or in the recipe)")
                continue
            try:
                checked[name] = check_value(spec, values[name])
            except ValueError as e:
                raise ConnectomeError(f"{source}: {name} {e}") from None
        settings = cls(**checked)
        try:
            settings.check()
        except ValueError as e:
            raise ConnectomeError(f"{source}: {e}") from None
        return settings

    def check(self) -> None:
        """Checks across fields; raise ValueError. Subclasses extend it."""

    # --- identity ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hashed(self) -> dict:
        """The settings that decide a run's numbers."""
        values = self.to_dict()
        return {s.name: values[s.name] for s in self.specs() if self._decides(s) and
                not (s.meta["hashed_when_set"] and values[s.name] == s.meta["legacy"])}

    def _decides(self, spec) -> bool:
        return not spec.meta["runtime"] and (spec.meta["applies"] is None or spec.meta["applies"](self))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.hashed(), sort_keys=True).encode()).hexdigest()

    def diff(self, stored: dict) -> list[str]:
        """Names of the settings that decide a run whose stored values differ from these (a setting added
        later, absent from an older record, counts at the value such runs behaved as)."""
        values, out = self.to_dict(), []
        for spec in self.specs():
            if not self._decides(spec):
                continue
            theirs = spec.meta["legacy"] if spec.name not in stored and spec.meta["hashed_when_set"] else stored.get(spec.name)
            if theirs != values[spec.name]:
                out.append(spec.name)
        return sorted(out)

    def mismatch(self, folder: Path, stored: dict) -> ConnectomeError:
        names = ", ".join(self.diff(stored)) or "unknown"
        return ConnectomeError(f"{folder} holds a run with other settings ({names}): "
                               f"resume with the same settings or choose another --out")

    def run_name(self) -> str:
        return self.KIND

    def default_out(self) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.run_name()).strip("_")
        return Path("runs") / f"{slug}-{self.digest()[:self.DIGEST_CHARS]}"

    def claim(self, folder: Path) -> None:
        """Record these settings in `folder`/settings.json, or check that it holds the same ones."""
        from connectome.io import check_folder, mark_folder, write_text

        path = Path(folder) / "settings.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError):
                raise ConnectomeError(f"{path} is unreadable: choose another --out") from None
            if stored.get("digest") != self.digest():
                raise self.mismatch(Path(folder), stored.get("settings", {}))
            return
        check_folder(folder)  # a folder of someone else's files is not written into
        mark_folder(folder)
        write_text(path, json.dumps({"settings": self.hashed(), "digest": self.digest()}, indent=2))


def settings_model(cls, server_only: bool = False):
    """A pydantic model of the settings, generated from the same fields: their types (strict, as
    `check_value` holds them), bounds, choices, defaults and help. pydantic is the service's extra,
    so it is imported here, where the service asks for the model."""
    import pydantic

    fields = {s.name: _pydantic_field(s, pydantic) for s in cls.specs() if s.meta["server"] or not server_only}
    config = pydantic.ConfigDict(extra="forbid", strict=True)
    return pydantic.create_model(cls.__name__, __config__=config, **fields)


def _pydantic_field(s: Spec, pydantic) -> tuple:
    """(annotation, Field) of one setting."""
    m = s.meta
    bounds = {"ge": m["minimum"], "le": m["maximum"], "gt": m["above"], "lt": m["below"]}
    if s.kind is int:  # what _scalar holds every integer to
        bounds["ge"] = -INT64 - 1 if bounds["ge"] is None else bounds["ge"]
        bounds["le"] = INT64 if bounds["le"] is None else bounds["le"]
    bounds = {k: v for k, v in bounds.items() if v is not None}
    choices = s.choices()
    if choices is not None:
        item = typing.Literal[tuple(choices)]
    elif s.kind is float:
        item = typing.Annotated[float, pydantic.Field(allow_inf_nan=False, **bounds)]
    elif s.kind is str:
        item = typing.Annotated[str, pydantic.AfterValidator(_no_nul)]
    else:
        item = typing.Annotated[s.kind, pydantic.Field(**bounds)]
    annotation = list[item] if s.is_list else item
    if s.optional:
        annotation = annotation | None
    default = ... if s.required else s.default
    return annotation, pydantic.Field(default, description=m["help"])


def _no_nul(text: str) -> str:
    if "\0" in text:
        raise ValueError("holds a NUL character")
    return text


def job_schema(cls) -> dict:
    """A JSON Schema of the settings a service job may carry (for the API's documentation): the
    settings model's, without the titles pydantic derives from the names."""
    schema = settings_model(cls, server_only=True).model_json_schema()
    schema.pop("title", None)
    for prop in schema["properties"].values():
        prop.pop("title", None)
    schema.setdefault("required", [])
    return schema
