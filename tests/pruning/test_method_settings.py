"""Each method and score declares the settings it reads; a run's digest holds those and the common ones
(issue 29), and compare's sub-runs carry the settings of the run they are (issue 32 rows 6, 11, 13, 20)."""

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from connectome.cli import main
from connectome.io import read_metadata
from connectome.pruning import scores
from connectome.pruning.methods.base import RunFolder
from connectome.pruning.registry import METHODS
from connectome.pruning.settings import CompareSettings, PruneSettings
from connectome.pruning.setup import Runtime, prepare

TINY = ["--include", "6.weight", "--calib-samples", "200", "--eval-samples", "100", "--batch-size", "50", "--quiet"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(r, code: int = 2) -> bool:
    return r.exit_code == code and len(r.output.strip().splitlines()) == 1 and isinstance(r.exception, SystemExit)


@pytest.fixture
def registered():
    """register(table, cls): `cls` in the registry `table` for the test's length, as its module would."""
    entered = []
    yield lambda table, cls: entered.append((table, getattr(table.register(cls), table.key)))
    for table, name in entered:
        table.unregister(name)


def digest(**values) -> str:
    return PruneSettings(model="lenet_300_100", remove="30%", **values).digest()


def test_greedy_scores_are_different_runs_and_settings_of_other_methods_are_not_in_the_digest():
    assert digest(method="greedy", score="magnitude") != digest(method="greedy", score="dloss")
    # confidence is the connectome score's option: it decides a connectome run alone
    assert digest(method="greedy", score="connectome") != digest(method="greedy", score="connectome", confidence=4.0)
    assert digest(method="greedy", score="magnitude") == digest(method="greedy", score="magnitude", confidence=4.0)
    # row 20: the greedy loop's settings decide nothing in a one-shot or learned run, learn_* nothing in greedy
    assert digest(method="one-shot") == digest(method="one-shot", step=0.02, tolerance=1.0, learn_lr=0.01)
    assert digest(method="learned") == digest(method="learned", tolerance=1.0, grow=2.0, max_step=0.5, confidence=2)
    assert digest(method="greedy") == digest(method="greedy", learn_points=3, learn_lr=0.01)
    assert digest(method="one-shot") != digest(method="one-shot", learn_points=3)
    # a learned run's restore cycles are the greedy loop's: its settings and score then decide
    assert digest(method="learned", restore_cycles=2) != digest(method="learned", restore_cycles=2, tolerance=1.0)


class Sketch(RunFolder):
    """A method added as a new contributor would: one class, its settings and its registration."""
    name = "sketch"
    settings = ("learn_points",)


def test_a_new_method_gets_its_own_settings_in_its_digest(registered):
    registered(METHODS, Sketch)
    assert digest(method="sketch") != digest(method="sketch", learn_points=3)
    assert digest(method="sketch") == digest(method="sketch", step=0.02, learn_lr=0.01, score="magnitude")


def test_a_one_shot_run_resumes_under_settings_it_does_not_read(tmp_path):
    out = tmp_path / "run"
    args = ["prune", "lenet_300_100", "--remove", "30%", "--method", "one-shot", "--learn-points", "2", *TINY]
    assert cli(*args, "--out", out).exit_code == 0
    r = cli(*args, "--step", "0.02", "--tolerance", "1", "--learn-lr", "0.01", "--out", out, "--resume")
    assert r.exit_code == 0, r.output


COMPARE = ["compare", "lenet_300_100", "--remove", "30%", "--points", "2", "--seeds", "1", *TINY]


def test_compare_sub_runs_carry_the_digest_prune_gives_and_duplicates_run_once(tmp_path):
    out = tmp_path / "cmp"
    r = cli(*COMPARE, "--methods", "connectome,greedy,greedy:connectome,greedy:magnitude", "--out", out)
    assert r.exit_code == 0, r.output
    assert "greedy is the run of connectome" in r.output
    folders = sorted(p.name for p in (out / "runs").iterdir())
    assert folders == ["connectome-seed0", "greedy-magnitude-seed0"]
    cs = CompareSettings.from_mapping({"model": "lenet_300_100", "remove": "30%", "include": ["6.weight"],
                                       "calib_samples": 200, "eval_samples": 100, "batch_size": 50})
    for folder, method, score in (("connectome-seed0", "greedy", "connectome"),
                                  ("greedy-magnitude-seed0", "greedy", "magnitude")):
        recorded = read_metadata(out / "runs" / folder / "state.safetensors")["digest"]
        assert recorded == replace(cs.prune_settings(0), method=method, score=score).digest()
    assert json.loads((out / "compare.json").read_text())["summary"].keys() == {"connectome", "greedy:magnitude"}


def test_row6_compare_into_a_folder_of_other_settings_is_refused_untouched(tmp_path):
    out = tmp_path / "cmp"
    assert cli(*COMPARE, "--methods", "magnitude", "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = cli(*COMPARE, "--methods", "magnitude,random", "--out", out)
    assert one_line(r) and "other settings" in r.output and "methods" in r.output, r.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert cli(*COMPARE, "--methods", "magnitude", "--out", out).exit_code == 0  # the same settings resume


@pytest.mark.parametrize("args, name", [
    (["prune", "lenet_300_100", "--remove", "30%", "--method", "greedy", "--confidence", "1e40"], "--confidence"),
    (["compare", "lenet_300_100", "--remove", "30%", "--points", "1000000000"], "--points"),
    (["compare", "lenet_300_100", "--remove", "30%", "--seeds", "1000000"], "--seeds"),
])
def test_rows_11_and_13_unbounded_work_is_refused_in_one_line(args, name):
    r = cli(*args)
    assert one_line(r) and name in r.output and "at most" in r.output, r.output


class Blind(scores.Score):
    """A score that ranks nothing: NaN everywhere (what --confidence 1e40 made of the connectome score)."""
    name = "blind"

    def scores(self, name, w, stats, generator):
        return torch.full_like(w, float("nan"))


def test_row11_a_greedy_loop_that_stops_removing_stops_with_one_line(tmp_path, registered):
    from connectome.errors import ConnectomeError
    from connectome.pruning.methods.greedy import Greedy

    registered(scores.REGISTRY, Blind)
    s = PruneSettings(model="lenet_300_100", remove="30%", method="greedy", score="blind", include=["6.weight"],
                      calib_samples=200, eval_samples=100, batch_size=50, step=0.05, max_step=0.2, min_step=0.01)
    run = Greedy(prepare(s), tmp_path / "run", runtime=Runtime(progress=False))
    with pytest.raises(ConnectomeError, match="stopped making progress"):
        run.run()
