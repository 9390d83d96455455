import torch

from connectome.io import check_invariant, read_metadata, save_state


def test_invariant_counts_and_violations():
    base = {"w": torch.tensor([1.0, 2.0, 0.0, -3.0]), "b": torch.tensor([0.5])}
    ok = {"w": torch.tensor([1.0, 0.0, 0.0, -0.0]), "b": torch.tensor([0.5])}
    r = check_invariant(ok, base)
    assert r.ok and r.zeroed == 2 and r.zero_in_base == 1 and r.values == 5
    bad = {"w": torch.tensor([1.0, 2.0000002, 0.0, -3.0]), "b": torch.tensor([0.5])}
    r = check_invariant(bad, base)
    assert not r.ok and r.violations == 1 and "w" in r.first_violation
    assert not check_invariant({"w": base["w"]}, base).ok  # a missing tensor is a violation


def test_save_state_is_atomic_and_keeps_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    save_state(path, {"x": torch.arange(6.0).view(2, 3).t()}, {"removed": 3})
    assert read_metadata(path)["removed"] == "3"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def test_a_new_run_does_not_wait_for_a_folder_in_use(tmp_path):
    """Without --resume there is nothing to wait for: a folder another process is writing is refused at once."""
    import time

    from click.testing import CliRunner

    from connectome.cli import main
    from connectome.io import folder_lock

    out = tmp_path / "run"
    with folder_lock(out):
        start = time.time()
        r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "10%", "--calib-samples", "400",
                                      "--out", str(out), "--quiet"])
        assert r.exit_code == 2 and "being written by another process" in r.output and time.time() - start < 60
