"""Declarative recipes: YAML files under recipes/ whose keys are the settings of a command (the long
option names with underscores). Reading a recipe checks only its form; its values are checked by the
settings' own validation (connectome.settings), with the recipe named in the message."""

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


def load_recipe(name_or_path: str, kind: str) -> dict:
    """The recipe's settings, without its `kind` and `about`."""
    path = find_recipe(name_or_path)
    try:
        recipe = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConnectomeError(f"{path} is not a text file") from None
    except OSError as e:
        raise ConnectomeError(f"{path} cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConnectomeError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise ConnectomeError(f"{path} must be a mapping of option names to values")
    if recipe.pop("kind", kind) != kind:
        raise ConnectomeError(f"{path} is a recipe for another command, not `{kind}`")
    recipe.pop("about", None)
    if not all(isinstance(k, str) for k in recipe):
        raise ConnectomeError(f"{path}: every key must be a setting name")
    return recipe
