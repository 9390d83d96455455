import csv

from click.testing import CliRunner

from connectome.cli import main
from connectome.pruning.methods.base import schedule


def test_grid_is_exact_and_ends_at_target():
    assert schedule(1000, 4) == [250, 500, 750, 1000] and schedule(3, 5)[-1] == 3


def test_every_method_runs_and_every_point_is_written(tmp_path):
    methods = ["connectome", "magnitude", "random", "taylor", "fisher", "dloss", "one-shot:magnitude"]
    r = CliRunner().invoke(main, ["compare", "lenet_300_100", "--remove", "4000", "--points", "3", "--seeds", "2",
                                  "--methods", ",".join(methods), "--calib-samples", "600", "--eval-samples", "300",
                                  "--batch-size", "100", "--out", str(tmp_path), "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "compare.csv")))
    ran = methods[:-1]  # a bare score is the one-shot method under its old name: one run, under the first name
    assert "--methods one-shot:magnitude is the run of magnitude: it runs once" in r.output
    assert {(row["method"], row["seed"], row["removed"]) for row in rows} == {
        (m, str(s), str(k)) for m in ran for s in range(2) for k in (1333, 2667, 4000)}
    for png in ("compare.png", "layers.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "within 0.5" in r.output and all(m in r.output for m in ran)


def test_unknown_method_exits_2(tmp_path):
    r = CliRunner().invoke(main, ["compare", "lenet_300_100", "--remove", "10", "--methods", "magnitude,nope",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--methods must be one of" in r.output and not (tmp_path / "o").exists()


def test_bad_input_writes_nothing(tmp_path):
    """Every check, the model's and the data's included, comes before the output folder is made."""
    for args in (["--remove", "300k"], ["--remove", "10%", "--calib-samples", "70000"], ["--remove", "10%", "--seeds", "0"]):
        r = CliRunner().invoke(main, ["compare", "lenet_300_100", *args, "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert not (tmp_path / "o").exists()


def test_seed_starts_the_seeds_so_runs_side_by_side_add_up(tmp_path):
    """`--seed 1 --seeds 1` measures exactly the second seed of a `--seeds 2` run (another machine's share)."""
    args = ["compare", "lenet_300_100", "--remove", "4000", "--points", "2", "--methods", "random,magnitude",
            "--calib-samples", "600", "--eval-samples", "300", "--batch-size", "100", "--quiet"]
    for out, more in (("both", ["--seeds", "2"]), ("second", ["--seed", "1", "--seeds", "1"])):
        r = CliRunner().invoke(main, [*args, *more, "--out", str(tmp_path / out)], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    rows = {out: list(csv.DictReader(open(tmp_path / out / "compare.csv"))) for out in ("both", "second")}
    assert rows["second"] == [row for row in rows["both"] if row["seed"] == "1"] and rows["second"]
