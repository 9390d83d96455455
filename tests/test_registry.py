"""The one registry style: a read-only mapping filled by a class decorator, refusing a name twice and
naming the choices in one line when asked for one it lacks."""

import sys

import pytest

from connectome.data import DATA_SOURCES
from connectome.errors import ConnectomeError
from connectome.lottery.controls import CONTROLS
from connectome.lottery.strategies import STRATEGIES, GlobalMagnitude, LayerwiseMagnitude, make_strategy
from connectome.models import SOURCES
from connectome.pruning import scores
from connectome.pruning.registry import METHODS
from connectome.registry import Registry


def table():
    scores = Registry("score")

    @scores.register
    class B:
        name = "b"

    @scores.register
    class A:
        name = "a"
        aliases = ("alpha",)

    return scores, A, B


def test_a_registry_reads_as_a_mapping_in_registration_order():
    scores, A, B = table()
    assert list(scores) == ["b", "a"] and len(scores) == 2 and dict(scores.items()) == {"b": B, "a": A}
    assert scores["a"] is scores["alpha"] is A and "alpha" in scores and "c" not in scores
    assert scores.get("c") is None and scores.get("alpha") is A
    with pytest.raises(TypeError):
        scores["c"] = B  # only `register` writes


def test_an_unknown_name_is_one_line_naming_the_choices():
    scores, _, _ = table()
    with pytest.raises(ConnectomeError) as e:
        scores["x"]
    assert str(e.value) == "unknown score 'x': choose from b, a"
    assert isinstance(e.value, KeyError)


def test_a_name_or_alias_registered_twice_is_refused_and_unregister_frees_both():
    scores, A, _ = table()
    for name, aliases in (("a", ()), ("c", ("alpha",)), ("alpha", ())):
        with pytest.raises(ValueError, match="score .* is registered twice"):
            scores.register(type("Again", (), {"name": name, "aliases": aliases}))
    assert list(scores) == ["b", "a"]
    scores.unregister("a")
    assert "alpha" not in scores and scores.register(A) is A and scores["alpha"] is A


def test_instances_by_another_key():
    sources = Registry("model source", key="kind", instance=True)

    @sources.register
    class Toy:
        kind = "toy"

    assert isinstance(sources["toy"], Toy)


def test_a_package_registers_its_entries_when_the_table_is_first_read(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "late_entries.py").write_text(
        "from test_registry_table import TABLE\n\n@TABLE.register\nclass Late:\n    name = 'late'\n")
    (tmp_path / "test_registry_table.py").write_text(
        "from connectome.registry import Registry\nTABLE = Registry('entry', package='late_entries')\n")
    from test_registry_table import TABLE
    try:
        assert "late_entries" not in sys.modules and list(TABLE) == ["late"]
    finally:
        for name in ("late_entries", "test_registry_table"):
            sys.modules.pop(name, None)


def test_the_project_tables_are_registries():
    assert all(isinstance(t, Registry) for t in (SOURCES, DATA_SOURCES, STRATEGIES, METHODS, scores.REGISTRY, CONTROLS))
    assert dict(STRATEGIES.items()) == {"layerwise": LayerwiseMagnitude, "global": GlobalMagnitude}
    assert DATA_SOURCES["fmnist"] is DATA_SOURCES["fashion-mnist"]
    with pytest.raises(ConnectomeError, match="^unknown strategy 'random': choose from layerwise, global$"):
        make_strategy(type("S", (), {"strategy": "random"}), {})
    with pytest.raises(ConnectomeError, match="^unknown method 'x': choose from greedy, learned, one-shot$"):
        METHODS["x"]
