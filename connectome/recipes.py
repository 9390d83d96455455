"""Declarative recipes: YAML files under recipes/ whose keys are the settings of a command (the long
option names with underscores). Reading a recipe checks only its form; its values are checked by the
settings' own validation (connectome.settings), with the recipe named in the message.

A recipe is a flat mapping of settings, so its reader refuses what YAML allows and a recipe never
needs: anchors and aliases (nine levels of aliases in a few hundred bytes expand to gigabytes), a key
given twice (the second would silently win), nesting deeper than a list, and files past a size no
recipe comes near."""

from pathlib import Path

import yaml

from connectome.errors import ConnectomeError
from connectome.io import read_bounded
from connectome.settings import shown

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
MAX_BYTES = 64 * 1024  # the largest recipe in recipes/ is about 1 kB
MAX_DEPTH = 4  # a mapping of lists, with room to say that a deeper value is refused by its setting
_REASON_CHARS = 120  # of PyYAML's description of a problem, which quotes the input


class _RecipeLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, without anchors, aliases, repeated keys or deep nesting."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed",
                                              event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                              event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {shown(key.value)} is given twice",
                                                            key.start_mark)
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep)


def _reason(e: Exception) -> str:
    """What PyYAML found wrong, on one line and short, with the line it found it on."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        text = e.problem + (f" (line {e.problem_mark.line + 1})" if e.problem_mark else "")
    else:
        text = " ".join(str(e).split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def find_recipe(name_or_path: str) -> Path:
    """A path, or a bare name looked up in recipes/ ("train-lenet_300_100" or with .yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / name_or_path, RECIPES_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConnectomeError(f"no recipe {name_or_path!r} (neither a file nor a name in {RECIPES_DIR})")


def _read(path: Path) -> str:
    """The file's text, read no further than a recipe may be long."""
    data = read_bounded(path, MAX_BYTES, str(path), "a recipe is a short list of settings")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConnectomeError(f"{path} is not a UTF-8 text file") from None


def load_recipe(name_or_path: str, kind: str) -> dict:
    """The recipe's settings, without its `kind` and `about`."""
    path = find_recipe(name_or_path)
    try:
        # ValueError: PyYAML's constructors let some through (a date of month 13, an integer of
        # 5,000 digits).
        recipe = yaml.load(_read(path), Loader=_RecipeLoader)
    except (yaml.YAMLError, ValueError) as e:
        raise ConnectomeError(f"{path} is not a valid recipe: {_reason(e)}") from None
    if not isinstance(recipe, dict):
        raise ConnectomeError(f"{path} must be a mapping of option names to values")
    if recipe.pop("kind", kind) != kind:
        raise ConnectomeError(f"{path} is a recipe for another command, not `{kind}`")
    recipe.pop("about", None)
    if not all(isinstance(k, str) for k in recipe):
        raise ConnectomeError(f"{path}: every key must be a setting name")
    return recipe
