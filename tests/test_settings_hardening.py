"""Issue 32 rows 14 and 21 (counts), through the real command where they concern it: a recipe is read
with bounded work (no aliases, no repeated keys, no deep nesting, a size cap), every value a message
echoes is cut short, and numbers are ASCII digits only."""

import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectome.cli import main
from connectome.errors import ConnectomeError
from connectome.lottery.settings import LotterySettings
from connectome.sizes import parse_count

# Far above any message these settings make (the list of setting names is the longest part), far
# below the megabytes an expanded value made.
MESSAGE_CHARS = 2000


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(r) -> bool:
    return (r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and isinstance(r.exception, SystemExit)
            and len(r.output) < MESSAGE_CHARS)


def alias_bomb(levels: int) -> str:
    """`levels` levels of nine aliases each: 9**levels strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(["kind: lottery", "model: lenet_300_100_mnist", *lines, f"lr: *a{levels - 1}"]) + "\n"


def recipe(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


# --- row 14: recipes ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["lottery", "prune", "compare"])
def test_row14_an_alias_bomb_is_refused_before_it_expands(tmp_path, command):
    text = alias_bomb(9).replace("kind: lottery", f"kind: {command}")
    args = [command, recipe(tmp_path, text)] if command == "lottery" else [command, "--recipe", recipe(tmp_path, text)]
    r = cli(*args, "--out", str(tmp_path / "out"))
    assert one_line(r), r.output[:300]
    assert "anchors and aliases (&name, *name) are not allowed (line 3)" in r.output


def test_row14_a_single_alias_is_refused_too(tmp_path):
    text = "kind: lottery\nmodel: &m lenet_300_100_mnist\nlr: 0.001\nseed: *m\n"
    r = cli("lottery", recipe(tmp_path, text))
    assert one_line(r) and "anchors and aliases" in r.output and "(line 2)" in r.output, r.output


def test_row14_a_key_given_twice_is_refused(tmp_path):
    text = "kind: lottery\nmodel: lenet_300_100_mnist\nlr: 0.001\n'lr': 0.5\n"
    r = cli("lottery", recipe(tmp_path, text))
    assert one_line(r) and "key 'lr' is given twice (line 4)" in r.output, r.output


def test_row14_a_recipe_past_the_size_cap_is_refused_unread(tmp_path):
    text = "kind: lottery\nmodel: lenet_300_100_mnist\n" + "#" * 64 * 1024 + "\n"
    r = cli("lottery", recipe(tmp_path, text))
    assert one_line(r) and "is over 64 kB" in r.output, r.output


def test_row14_deep_nesting_is_refused_without_a_traceback(tmp_path):
    r = cli("lottery", recipe(tmp_path, "kind: lottery\nlr: " + "[" * 5000 + "\n"))
    assert one_line(r) and "nested more than 4 levels deep" in r.output, r.output


@pytest.mark.parametrize("text,message", [
    ("kind: lottery\nmodel: '" + "x" * 50_000 + "'\n", "(50,002 characters)"),
    ("kind: lottery\nmodel: lenet_300_100_mnist\nlr: [" + "1," * 20_000 + "]\n", "(60,000 characters)"),
    ("kind: lottery\n" + "".join(f"k{i}: 1\n" for i in range(5000)), "and 4,995 more"),
    ("kind: lottery\nmodel: lenet_300_100_mnist\nlevels: " + "9" * 5000 + "\n", "is not a valid recipe"),
    ("kind: lottery\nmodel: lenet_300_100_mnist\nseed: 2001-13-45\n", "month must be in 1..12"),
])
def test_row14_an_echoed_value_is_cut_short(tmp_path, text, message):
    r = cli("lottery", recipe(tmp_path, text))
    assert one_line(r) and message in r.output, r.output[:300]


def test_row14_the_shipped_recipes_still_read():
    for path in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("lottery-*.yaml")):
        assert LotterySettings.from_recipe(str(path)).model


FRAGMENTS = ["kind: lottery", "model: lenet_300_100_mnist", "lr: 0.001", "levels: 3", "about: >", "  text",
             "a: &x [1, 2]", "b: *x", "<<: {lr: 1}", "seed: !!binary aGk=", "seed: !!python/object:os.system {}",
             "seed: 2001-02-30", "seed: 1:2:3", "lr: .inf", "lr: 1e999", "controls: [random_reinit, {a: b}]",
             "? [1, 2]\n: 3", "data: !!set {a, b}", "%YAML 1.1\n---", "---\n...", "seed: 0x" + "f" * 40,
             "iterations: 0o777", "lr: !!float abc", "model: [[[[[[1]]]]]]", "lr: \"\\x00\"", "\t- x", "{"]


def recipe_bytes():
    lines = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=30), max_size=12).map("\n".join)
    return st.binary(max_size=200) | lines.map(str.encode)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=recipe_bytes())
def test_row14_any_recipe_bytes_give_settings_or_one_short_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_bytes(data)
        try:
            LotterySettings.from_recipe(str(path))
        except ConnectomeError as e:
            assert "\n" not in str(e) and len(str(e)) < MESSAGE_CHARS


# --- row 21: ASCII digits only --------------------------------------------------------------------

def test_row21_arabic_indic_digits_are_not_a_count(tmp_path):
    out = tmp_path / "run"
    r = cli("prune", "lenet_300_100", "--remove", "٥٠%", "--out", str(out), "--quiet")
    assert one_line(r) and "malformed count '٥٠%'" in r.output and "ASCII digits" in r.output, r.output
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--levels", "٥"), ("--lr", "١e-3"), ("--seed", "𝟘")])
def test_row21_number_flags_take_ascii_digits_only(tmp_path, flag, value):
    r = cli("lottery", "lottery-lenet300-mnist", flag, value, "--out", str(tmp_path / "run"))
    assert one_line(r) and f"{flag} must be" in r.output, r.output


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_row21_any_count_text_is_a_count_in_range_or_one_line(text):
    try:
        count = parse_count(text, 1000)
    except ConnectomeError as e:
        assert "\n" not in str(e) and len(str(e)) < 200
    else:
        assert 1 <= count <= 1000 and text.isascii()
