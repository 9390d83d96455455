"""A submitted JSON job becomes validated `PruneSettings`, which is what the service stores and runs.

The body's keys are the settings' names (connectome.pruning.settings), checked by the settings' own
validation, the code that also checks recipes and command-line flags, so a bad value is refused with
one line that names the field. A few keys are the server's: `command` (always "prune"),
`nproc_per_node` (ranks under torchrun) and `recipe` (read here, at submit time: its values,
overridden by the body's fields, become the stored settings). `out`, `resume` and `quiet` are the
server's to choose.

On top of that the service refuses what only a shared server must: code imports (`package.module:fn`
models) unless allowed, any file path outside the data roots (every setting whose metadata says
`path`), and settings a job may not set (metadata `server` false). Jobs that are well-formed but
impossible on this server (connectome.serve.feasible) are refused too, before they are stored.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.pruning.settings import PruneSettings
from connectome.serve.policy import SOURCE, Policy, data_kind  # noqa: F401 (Policy is part of this module's API)

SERVER_OWNED = {"out", "resume", "quiet"}  # the server picks the run folder and resumes after a restart
SERVER_KEYS = {"command", "nproc_per_node", "recipe"}  # not settings: what to run, how, and from which recipe


@dataclass
class Job:
    settings: PruneSettings
    nproc: int = 1

    @property
    def spec(self) -> dict:
        """What the store keeps: the validated settings, and the ranks to launch."""
        return {**self.settings.to_dict(), "nproc_per_node": self.nproc}


def parse(body, policy: Policy) -> Job:
    """Validate a submitted body; raise ConnectomeError with one line that names the field."""
    from connectome.serve import feasible

    if not isinstance(body, dict):
        raise ConnectomeError("the body must be a JSON object")
    command = body.get("command", "prune")
    if command != "prune":
        raise ConnectomeError(f"unknown command {command!r}: the service runs `prune` jobs")
    owned = sorted(SERVER_OWNED & set(body))
    if owned:
        raise ConnectomeError(f"{SOURCE}: {owned[0]!r} is set by the server")
    nproc = body.get("nproc_per_node", 1)
    if not isinstance(nproc, int) or isinstance(nproc, bool) or not 1 <= nproc <= policy.max_nproc:
        raise ConnectomeError(f"{SOURCE}: nproc_per_node must be an integer from 1 to {policy.max_nproc} on this server")
    values = {k: v for k, v in body.items() if k not in SERVER_KEYS}
    source = SOURCE
    if "recipe" in body:
        recipe = body["recipe"]
        if not isinstance(recipe, str) or "\0" in recipe:
            raise ConnectomeError(f"{SOURCE}: recipe must be a recipe name of the project or a path under a data root")
        check_recipe(recipe, policy)  # before it is read: a path could name any file
        from connectome.recipes import load_recipe
        values = {**load_recipe(recipe, PruneSettings.KIND), **values}
        source = f"{SOURCE} (recipe {recipe})"
    refused = sorted(set(values) & not_for_jobs(PruneSettings))
    if refused:
        raise ConnectomeError(f"{source}: {', '.join(refused)} cannot be set in a service job")
    settings = PruneSettings.from_mapping(values, source)
    check_allowed(settings, policy)
    feasible.check(settings, policy, nproc)
    return Job(settings, nproc)


def stored_settings(spec: dict, source: str) -> tuple[PruneSettings, int]:
    """The settings and ranks of a stored job (as `Job.spec` wrote it), validated again: a row can
    be damaged, or written by an earlier server (a body with a `recipe`, checked when it was stored)."""
    if not isinstance(spec, dict):
        raise ConnectomeError(f"{source}: the stored job is not a JSON object")
    nproc = spec.get("nproc_per_node", 1)
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ConnectomeError(f"{source}: nproc_per_node must be a positive integer, got {nproc!r}")
    values = {k: v for k, v in spec.items() if k not in SERVER_KEYS}
    if isinstance(spec.get("recipe"), str):
        from connectome.recipes import load_recipe
        values = {**load_recipe(spec["recipe"], PruneSettings.KIND), **values}
    return PruneSettings.from_mapping(values, source), nproc


def not_for_jobs(cls) -> set[str]:
    """Settings whose metadata says a service job may not set them."""
    return {s.name for s in cls.specs() if not s.meta["server"]}


def check_allowed(settings: PruneSettings, policy: Policy) -> None:
    """What the server's policy allows a job: checked when it is submitted, and again when it runs
    (a job queued under --allow-user-code or another data root must not run on a server without)."""
    check_model(settings.model, policy)
    check_paths(settings, policy)


def check_model(model: str, policy: Policy) -> None:
    from connectome.models.load import source_of

    source = source_of(model)  # unknown names: ConnectomeError "unknown model ..."
    if source.imports_code and not policy.allow_user_code:
        raise ConnectomeError(f"{SOURCE}: model {model!r} imports code, which this server refuses "
                              f"(start it with --allow-user-code)")
    try:
        source.check_name(model)
    except ConnectomeError as e:
        raise ConnectomeError(f"{SOURCE}: {e}") from None


def under_roots(path: str, roots) -> bool:
    """Whether `path` lies under one of `roots`, after symlinks and `..` are resolved."""
    p = Path(path)
    if not p.is_absolute():
        return False
    try:
        real = p.resolve()
        return any(real.is_relative_to(Path(r).resolve()) for r in roots)
    except (OSError, ValueError):  # a name too long, a NUL: no such path under a root
        return False


def paths_of(settings) -> list[tuple[str, str]]:
    """(field, path) of every file or folder the settings name: the fields whose metadata says `path`.
    A data spec `KIND:PATH` names its PATH (and a bare `KIND` no file of the job's)."""
    out = []
    values = settings.to_dict()
    for spec in settings.specs():
        if not spec.meta["path"] or values[spec.name] is None:
            continue
        for value in values[spec.name] if spec.is_list else [values[spec.name]]:
            data = data_kind(value)
            path = data[1] if data else value
            if path is not None:
                out.append((spec.name, path))
    return out


def check_paths(settings, policy: Policy) -> None:
    for name, path in paths_of(settings):
        if not under_roots(path, policy.data_roots):
            roots = ", ".join(map(str, policy.data_roots)) or "none configured: start the server with --data-root"
            raise ConnectomeError(f"{SOURCE}: {name} {path!r} is not an absolute path under a data root ({roots})")


_RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_recipe(recipe: str, policy: Policy) -> None:
    """A recipe of the project (by name) or a file under a data root; nothing else is read."""
    from connectome.recipes import RECIPES_DIR, find_recipe

    if under_roots(recipe, policy.data_roots):
        return
    if not _RECIPE_NAME.fullmatch(recipe):
        raise ConnectomeError(f"{SOURCE}: recipe {recipe!r} is neither a recipe name of the project nor under a data root")
    if not find_recipe(recipe).resolve().is_relative_to(RECIPES_DIR.resolve()):
        raise ConnectomeError(f"{SOURCE}: recipe {recipe!r} is not a recipe of the project")
