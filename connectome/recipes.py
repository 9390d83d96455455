"""Declarative recipes: YAML files under recipes/ whose keys are the command's own option names."""

from pathlib import Path

import yaml

from connectome.errors import ConnectomeError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def find_recipe(name_or_path: str) -> Path:
    """A path, or a bare name looked up in recipes/ ("train-lenet_300_100" or with .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / name_or_path, RECIPES_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConnectomeError(f"no recipe {name_or_path!r} (neither a file nor a name in {RECIPES_DIR})")


def load_recipe(name_or_path: str, kind: str, allowed: set[str]) -> dict:
    path = find_recipe(name_or_path)
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConnectomeError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise ConnectomeError(f"{path} must be a mapping of option names to values")
    if recipe.pop("kind", kind) != kind:
        raise ConnectomeError(f"{path} is a recipe for another command, not `{kind}`")
    recipe.pop("about", None)
    unknown = set(recipe) - allowed
    if unknown:
        raise ConnectomeError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return recipe
