"""Settings declared once: one validation for flags, recipes and jobs; the digest that names runs."""

import math
from dataclasses import dataclass

import pytest

from connectome.errors import ConnectomeError
from connectome.pruning.settings import CompareSettings, PruneSettings
from connectome.settings import RunSettings, job_schema, setting


@dataclass
class Toy(RunSettings):
    KIND = "toy"
    name: str = setting(help="a name", argument=True)
    count: int = setting(3, "a count", minimum=1)
    rate: float = setting(0.5, "a rate", above=0, below=1)
    tags: list[str] = setting([], "tags")
    limit: int | None = setting(None, "a limit", minimum=0)
    every: int = setting(5, "how often", runtime=True)
    extra: float = setting(0.0, "added later", hashed_when_set=True)


@pytest.mark.parametrize("values,message", [
    ({"count": 3}, "name is required"),
    ({"name": "a", "count": "3"}, "count must be an integer, got '3'"),
    ({"name": "a", "count": True}, "count must be an integer, got True"),
    ({"name": "a", "count": 0}, "count must be at least 1"),
    ({"name": "a", "rate": math.inf}, "rate must be a finite number, got inf"),
    ({"name": "a", "rate": math.nan}, "rate must be a finite number"),
    ({"name": "a", "rate": 1.0}, "rate must be below 1"),
    ({"name": "a", "tags": [1]}, "tags must be a string, got 1"),
    ({"name": "a", "tags": {"x": 1}}, "tags must be a list"),
    ({"name": "a\0b"}, "name holds a NUL character"),
    ({"name": "a", "count": None}, "count may not be null"),
    ({"name": "a", "colour": 1}, "unknown setting 'colour'"),
    ({"name": "a", "rate": 1e300}, "rate must be below 1, got 1e+300"),
    ({"name": "a", "count": 1e300}, "count must be an integer, got 1e+300"),
    ({"name": "a", "limit": -2**64}, "limit must be an integer of 64 bits"),
    ({"name": "a", "rate": 10**400}, "rate must be a finite number, got 10000000... (401 digits)"),
    ({"name": "a", "count": 10**400}, "count must be an integer of 64 bits (at most 9,223,372,036,854,775,807 in size), "
                                      "got 10000000... (401 digits)"),
])
def test_every_bad_value_is_one_line_naming_the_setting(values, message):
    with pytest.raises(ConnectomeError) as e:
        Toy.from_mapping(values, "recipe r.yaml")
    assert str(e.value).startswith("recipe r.yaml: ") and message in str(e.value) and "\n" not in str(e.value)


def test_values_are_normalised():
    t = Toy.from_mapping({"name": "a", "rate": 1 / 4, "tags": "x, y", "limit": None})
    assert t.rate == 0.25 and t.tags == ["x", "y"] and t.limit is None
    assert isinstance(Toy.from_mapping({"name": "a", "rate": 0}.__class__({"name": "a"})).rate, float)


@dataclass
class Later(Toy):
    # Added after runs were named, with a default other than what those runs behaved as.
    mode: str = setting("new", "a mode", hashed_when_set=True, legacy="old")


def test_runtime_and_later_settings_enter_the_digest_only_when_they_decide():
    decides = {"name": "a", "count": 3, "rate": 0.5, "tags": [], "limit": None}  # Toy(name="a"), written out
    assert Toy(name="a").hashed() == decides  # extra at its legacy value (its default) stays out
    assert Toy(name="a", every=9).hashed() == decides  # a runtime setting never enters
    assert Toy(name="a", extra=1.0).hashed() == {**decides, "extra": 1.0}  # a later setting, once used
    assert Later(name="a", mode="old", every=9).hashed() == decides  # at its legacy value: earlier runs' digest
    assert Later(name="a").hashed() == {**decides, "mode": "new"}  # the new default is no legacy value
    assert Later(name="a", mode="old").digest() == Toy(name="a").digest() != Later(name="a").digest()
    assert Toy(name="a", count=4).digest() != Toy(name="a").digest()
    assert Toy(name="a").diff({**decides, "count": 7}) == ["count"]


def test_prune_digest_is_the_one_runs_were_named_with():
    """The demo recipe under the first version's rules keeps the digest the first version gave it (its
    run folders resume); the rules adopted since (defaults that were off before) name other folders."""
    demo = {"model": "lenet_300_100", "data": "fashion-mnist", "remove": "50%", "criterion": "connectome",
            "calib_samples": 10000, "accept_fraction": 0.2, "batch_size": 250, "eval_every": 5, "seed": 0}
    s = PruneSettings.from_mapping({**demo, "keep_descents": False, "unknown_last": False, "headroom": False,
                                    "descent_keeps_top1": False})
    assert s.digest() == "93bce45f801593441c0b38acee03c14abc0fed8b2e847d49683a64b07ceadb97"
    now = PruneSettings.from_mapping(demo)
    later = {"keep_descents", "unknown_last", "headroom", "descent_keeps_top1"}
    assert now.digest() != s.digest() and later <= set(now.hashed())
    # A state stored by the first version (none of these keys) differs from today's defaults in them.
    assert now.diff(s.hashed()) == sorted(later) and s.diff(s.hashed()) == []
    assert PruneSettings.from_mapping({**s.to_dict(), "device": "cpu", "workers": 2, "eval_every": 1}).digest() == s.digest()


def test_remove_counts_and_percentages():
    assert PruneSettings.from_mapping({"model": "m", "remove": 1000}).remove == "1000"
    for bad, message in (("101%", "over 100%"), ("0", "positive"), ("abc", "malformed"), ("1.5", "whole number")):
        with pytest.raises(ConnectomeError, match=message):
            PruneSettings.from_mapping({"model": "m", "remove": bad})


def test_cross_field_checks():
    with pytest.raises(ConnectomeError, match="min_step <= step <= max_step"):
        PruneSettings.from_mapping({"model": "m", "remove": "1%", "step": 0.2, "max_step": 0.1})
    with pytest.raises(ConnectomeError, match="methods must be one of"):
        CompareSettings.from_mapping({"model": "m", "remove": "1%", "methods": ["magnitude", "nope"]})


def test_compare_settings_give_prune_settings_per_seed():
    cs = CompareSettings.from_mapping({"model": "lenet_300_100", "remove": "10%", "seeds": 2, "batch_size": 50})
    s = cs.prune_settings(1)
    assert type(s) is PruneSettings and s.seed == 1 and s.batch_size == 50


def test_job_schema_lists_each_setting_with_its_range():
    schema = job_schema(PruneSettings)
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"model", "remove"}
    assert schema["properties"]["batch_size"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1, "description":
                                                  schema["properties"]["batch_size"]["description"], "default": 128}
    assert "connectome" in schema["properties"]["score"]["enum"]
    assert set(schema["properties"]["method"]["enum"]) == {"greedy", "learned", "one-shot"}


def test_claim_refuses_a_folder_of_other_settings(tmp_path):
    Toy(name="a").claim(tmp_path)
    Toy(name="a", every=2).claim(tmp_path)  # runtime settings may differ
    with pytest.raises(ConnectomeError, match=r"other settings \(count\)"):
        Toy(name="a", count=9).claim(tmp_path)


@pytest.mark.parametrize("value", [1e300, 1.7976931348623157e308, 2**63, 2**64, 10**40])
def test_bounded_prune_settings_refuse_the_far_end(value):
    """Every numeric prune setting with an upper bound refuses what a float or an int can hold beyond it."""
    base = {"model": "m", "remove": "1%"}
    bounded = [s for s in PruneSettings.specs() if s.kind in (int, float) and not s.is_list
               and (s.meta["maximum"] is not None or s.meta["below"] is not None)]
    assert {"seed", "step", "learn_lr", "learn_epochs"} <= {s.name for s in bounded}
    for spec in bounded:
        v = float(value) if spec.kind is float else (value if isinstance(value, int) else None)
        if v is None:
            continue
        with pytest.raises(ConnectomeError, match=f"{spec.name} must be "):
            PruneSettings.from_mapping({**base, spec.name: v}, "job")


def test_claim_refuses_a_folder_of_someone_elses_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ConnectomeError, match="holds files connectome did not write"):
        Toy.from_mapping({"name": "a"}).claim(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    Toy.from_mapping({"name": "a"}).claim(tmp_path / "new")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [".connectome", "settings.json"]
