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


def test_folders_connectome_wrote_are_known_by_marker_or_by_what_earlier_versions_wrote(tmp_path):
    from connectome.io import MARKER, foreign_files

    def folder(name, files):
        f = tmp_path / name
        f.mkdir()
        for n, text in files.items():
            (f / n).write_text(text)
        return f

    assert foreign_files(tmp_path / "missing") == [] and foreign_files(folder("empty", {})) == []
    assert foreign_files(folder("marked", {MARKER: "", "model.safetensors": "x"})) == []
    assert foreign_files(folder("locked", {".lock": "", "state.safetensors": "x"})) == []  # any earlier run
    assert foreign_files(folder("lottery", {"settings.json": '{"settings": {}, "digest": "ab"}'})) == []
    assert foreign_files(folder("compare", {"compare.json": '{"dense": {}, "summary": {}}', "compare.csv": ""})) == []
    assert foreign_files(folder("job", {"job.json": '{"model": "m", "remove": "1%"}'})) == []
    assert foreign_files(folder("user", {"settings.json": '{"theme": 1}', "a.txt": ""})) == ["a.txt", "settings.json"]
    assert foreign_files(folder("broken", {"job.json": "not json"})) == ["job.json"]
