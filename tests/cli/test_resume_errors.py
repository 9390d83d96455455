"""A damaged run folder is refused with one line."""

from click.testing import CliRunner

from connectome.cli import main

FAST = ["--calib-samples", "400", "--eval-samples", "200", "--batch-size", "100", "--quiet", "--method", "greedy", "--score", "magnitude"]


def test_truncated_state_then_resume_is_one_line(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "2000", "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    state = out / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "2000", "--out", str(out), "--resume", *FAST])
    assert r.exit_code == 2 and "run state is unreadable" in r.output and len(r.output.strip().splitlines()) == 1
