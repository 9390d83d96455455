"""A submitted job, as JSON, becomes a `connectome prune` command line, checked by the CLI's own code.

The JSON keys are the flags of `prune` with dashes turned into underscores. They are turned into
`--flag=value` arguments and parsed by the `prune` command itself (click), then resolved into
`PruneSettings` and checked exactly as `connectome prune` does before it writes anything. So a job is
refused for the same reasons, with the same message, and the worker later runs the same arguments.

On top of that the service refuses what only a shared server must: code imports (`package.module:fn`
models) unless allowed, and any file path outside the data roots.
"""

from dataclasses import dataclass
from pathlib import Path

import click

from connectome.errors import ConnectomeError

SERVER_OWNED = {"out", "resume", "quiet"}  # the server picks the run folder and resumes after a restart
SERVER_KEYS = {"nproc_per_node"}  # not `prune` flags: how the worker launches the job


@dataclass
class Policy:
    allow_user_code: bool = False
    data_roots: tuple[Path, ...] = ()
    max_nproc: int = 1


@dataclass
class Job:
    spec: dict  # the body without "command"
    argv: list[str]  # `connectome prune` arguments, without --out/--resume/--quiet
    nproc: int
    model: str  # as resolved from the flags and the recipe
    remove: str


def _prune_command() -> click.Command:
    from connectome.cli.prune import prune
    return prune


def field_name(p: click.Parameter) -> str:
    """A flag's JSON field: its long option with underscores (`--calib-samples` -> calib_samples)."""
    long = [o for o in p.opts if o.startswith("--")]
    return long[0][2:].replace("-", "_") if long else p.name


def to_argv(spec: dict) -> list[str]:
    params = {field_name(p): p for p in _prune_command().params}
    argv, positional = [], []
    for key, value in spec.items():
        if key in SERVER_KEYS:
            continue
        if key in SERVER_OWNED:
            raise ConnectomeError(f"{key!r} is set by the server")
        if key not in params:
            raise ConnectomeError(f"unknown field {key!r}: the fields are the flags of `connectome prune`, "
                                  f"with underscores (e.g. calib_samples)")
        p = params[key]
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (str, int, float, bool)) for v in values) or (isinstance(value, list) and not p.multiple):
            raise ConnectomeError(f"{key!r} must be {'a list of values' if p.multiple else 'a string, number or boolean'}")
        if any(isinstance(v, str) and "\0" in v for v in values):
            raise ConnectomeError(f"{key!r} holds a NUL character")  # no command line or path can carry one
        if isinstance(p, click.Argument):
            positional.append(str(value))
        elif getattr(p, "is_flag", False):
            if not isinstance(value, bool):
                raise ConnectomeError(f"{key!r} is a flag: true or false")
            if value or p.secondary_opts:  # --channels-last / --no-channels-last
                argv.append(p.opts[0] if value else p.secondary_opts[0])
        else:
            argv += [f"{p.opts[0]}={v}" for v in values]
    return argv + (["--", *positional] if positional else [])


def parse(body, policy: Policy) -> Job:
    """Validate a submitted body; raise ConnectomeError with one clear message."""
    from connectome.cli.prune import settings_from
    from connectome.pruning.run import check_settings

    if not isinstance(body, dict):
        raise ConnectomeError("the body must be a JSON object")
    command = body.get("command", "prune")
    if command != "prune":
        raise ConnectomeError(f"unknown command {command!r}: the service runs `prune` jobs")
    spec = {k: v for k, v in body.items() if k != "command"}
    nproc = spec.get("nproc_per_node", 1)
    if not isinstance(nproc, int) or isinstance(nproc, bool) or not 1 <= nproc <= policy.max_nproc:
        raise ConnectomeError(f"nproc_per_node must be an integer from 1 to {policy.max_nproc} on this server")
    argv = to_argv(spec)
    command = _prune_command()
    try:
        ctx = command.make_context("prune", list(argv))
    except click.UsageError as e:  # includes BadParameter and NoSuchOption: click's own message
        raise ConnectomeError(e.format_message()) from None
    _check_recipe(ctx.params.get("recipe"), policy)  # before it is read: a path could name any file
    settings = settings_from(ctx.params, ctx)
    check_settings(settings)
    _check_model(settings.model, policy)
    _check_paths(ctx.params, settings, command, policy)
    return Job(spec, argv, nproc, settings.model, settings.remove)


def _check_model(model: str, policy: Policy) -> None:
    from connectome.models.load import model_kind

    kind = model_kind(model)
    if kind == "user" and not policy.allow_user_code:
        raise ConnectomeError(f"model {model!r} imports code, which this server refuses (start it with --allow-user-code)")
    if kind == "timm":
        import timm
        if not timm.is_model(model[5:].split(".")[0]):
            raise ConnectomeError(f"unknown timm model {model[5:]!r} (see `connectome models --timm`)")


def under_roots(path: str, roots) -> bool:
    """Whether `path` lies under one of `roots`, after symlinks and `..` are resolved."""
    p = Path(path)
    if not p.is_absolute():
        return False
    real = p.resolve()
    return any(real.is_relative_to(Path(r).resolve()) for r in roots)


def _check_paths(params: dict, settings, command: click.Command, policy: Policy) -> None:
    paths = []
    if settings.data and ":" in settings.data:
        paths.append(("data", settings.data.partition(":")[2]))
    if settings.weights_file:
        paths.append(("weights_file", settings.weights_file))
    for p in command.params:  # any other file option `prune` has, now or later
        if isinstance(p.type, click.Path) and p.name not in SERVER_OWNED and p.name != "weights_file" and params.get(p.name):
            paths.append((p.name, params[p.name]))
    for key, path in paths:
        if not under_roots(path, policy.data_roots):
            roots = ", ".join(map(str, policy.data_roots)) or "none configured: start the server with --data-root"
            raise ConnectomeError(f"{key} {path!r} is not an absolute path under a data root ({roots})")


def _check_recipe(recipe: str | None, policy: Policy) -> None:
    from connectome.recipes import RECIPES_DIR, find_recipe

    if not recipe or under_roots(recipe, policy.data_roots):
        return
    if "/" in recipe or "\\" in recipe or recipe.startswith("."):
        raise ConnectomeError(f"recipe {recipe!r} is neither a recipe name of the project nor under a data root")
    if not find_recipe(recipe).resolve().is_relative_to(RECIPES_DIR.resolve()):
        raise ConnectomeError(f"recipe {recipe!r} is not a recipe of the project")
