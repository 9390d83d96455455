"""The lottery-ticket pipeline on tiny data: masks, rates, rewinding, controls, resuming, recipes."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import torch_threads, write_idx
from connectome.cli.lottery import lottery
from connectome.errors import ConnectomeError
from connectome.lottery.experiment import Lottery
from connectome.lottery.settings import LotterySettings
from connectome.lottery.strategies import check_shrinks
from connectome.pruning.mask import Mask

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
LENET_LAYERS = {"2.weight": "fc", "4.weight": "fc", "6.weight": "output"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(idx_folder, **kw) -> LotterySettings:
    values = dict(model="lenet_300_100_mnist", data=f"mnist:{idx_folder}", iterations=20, eval_every=5,
                  val_samples=50, levels=3, checkpoint_every=7, device="cpu")
    return LotterySettings(**{**values, **kw})


def write_cifar(folder: Path, per_batch: int = 12, n_test: int = 10, seed: int = 0) -> Path:
    """Tiny CIFAR-10 binary files: records of one label byte and 3072 image bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        n = n_test if name == "test_batch.bin" else per_batch
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], images], axis=1).tofile(folder / name)
    return folder


def masks(run: Lottery, arm: str = "ticket") -> dict[int, Mask]:
    return {lv: Mask.load(run.folder(lv, arm) / "mask.safetensors") for lv in range(run.s.levels + 1)
            if (run.folder(lv, arm) / "mask.safetensors").exists()}


def files(folder: Path) -> dict[str, dict]:
    return {str(p.relative_to(folder)): load_file(str(p)) for p in sorted(folder.rglob("*.safetensors"))
            if p.name != "checkpoint.safetensors"}


def no_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_masks_only_shrink_and_follow_the_layer_rates(idx_folder, tmp_path):
    run = Lottery(tiny(idx_folder), tmp_path / "run", progress=False)
    rows = run.run()
    m = masks(run)
    assert sorted(m) == [0, 1, 2, 3] and m[0].removed() == 0
    rates = {"fc": 0.2, "output": 0.1}
    for level in (1, 2, 3):
        check_shrinks(m[level - 1], m[level])
        for name, kind in LENET_LAYERS.items():
            before, after = int(m[level - 1][name].sum()), int(m[level][name].sum())
            assert after == before - round(rates[kind] * before)
            assert after / m[0][name].numel() == pytest.approx((1 - rates[kind]) ** level, abs=2e-3)
    assert [r["percent_remaining"] for r in rows] == sorted((r["percent_remaining"] for r in rows), reverse=True)
    # The pruned weights are exactly zero in every trained model, and the largest survived.
    for level in (1, 2, 3):
        trained = load_file(str(run.folder(level, "ticket") / "model.safetensors"))
        for name in LENET_LAYERS:
            assert torch.all(trained[name][~m[level][name]] == 0)
        before = load_file(str(run.folder(level - 1, "ticket") / "model.safetensors"))["2.weight"].abs()
        removed = m[level - 1]["2.weight"] & ~m[level]["2.weight"]
        assert before[removed].max() <= before[m[level]["2.weight"]].min()


def test_global_strategy_pools_the_layers(idx_folder, tmp_path):
    run = Lottery(tiny(idx_folder, strategy="global", global_rate=0.5, levels=1), tmp_path / "run", progress=False)
    run.run()
    m = masks(run)[1]
    assert m.kept() == m.total() - round(0.5 * m.total())
    fractions = [float(m[n].float().mean()) for n in LENET_LAYERS]
    assert max(fractions) - min(fractions) > 0.05  # not the same rate everywhere


def test_rewinding_restores_the_exact_saved_values(idx_folder, tmp_path):
    run = Lottery(tiny(idx_folder, levels=2), tmp_path / "run", progress=False)
    run.run()
    init = load_file(str(tmp_path / "run" / "init.safetensors"))
    model, mask = run.start_model(2, "ticket")
    for k, v in model.state_dict().items():
        expected = init[k] * mask[k] if k in LENET_LAYERS else init[k]
        assert torch.equal(v, expected), k

    # Rewinding to iteration k: the saved state is the dense network after exactly k iterations.
    first = {}
    rewound = Lottery(tiny(idx_folder, levels=1, rewind_iter=7), tmp_path / "rewind", progress=False,
                      on_iteration=lambda level, arm, it: first.setdefault(level, it))
    rewound.run()
    short = Lottery(tiny(idx_folder, levels=0, iterations=7), tmp_path / "short", progress=False)
    short.run()
    at_k = load_file(str(tmp_path / "rewind" / "rewind.safetensors"))
    dense_k = load_file(str(short.folder(0, "ticket") / "model.safetensors"))
    assert at_k.keys() == dense_k.keys() and all(torch.equal(at_k[k], dense_k[k]) for k in at_k)
    model, mask = rewound.start_model(1, "ticket")
    for k, v in model.state_dict().items():
        assert torch.equal(v, at_k[k] * mask[k] if k in LENET_LAYERS else at_k[k]), k
    assert first == {0: 1, 1: 8}  # level 1 trains iterations k+1 .. end
    assert [e[0] for e in rewound.result(1, "ticket")["evals"]] == [10, 15, 20]


def test_controls_keep_the_ticket_sparsity(idx_folder, tmp_path):
    run = Lottery(tiny(idx_folder, levels=2, controls=["random_reinit", "random_prune"]), tmp_path / "run",
                  progress=False)
    rows = run.run()
    assert [(r["level"], r["arm"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "random_reinit"),
                                                      (1, "random_prune"), (2, "ticket"), (2, "random_reinit"),
                                                      (2, "random_prune")]
    init = load_file(str(tmp_path / "run" / "init.safetensors"))
    for level in (1, 2):
        ticket = Mask.load(run.folder(level, "ticket") / "mask.safetensors")
        reinit = Mask.load(run.folder(level, "random_reinit") / "mask.safetensors")
        rand = Mask.load(run.folder(level, "random_prune") / "mask.safetensors")
        assert reinit == ticket
        assert rand != ticket
        for name in LENET_LAYERS:
            assert int(rand[name].sum()) == int(ticket[name].sum())
        reinit_model, _ = run.start_model(level, "random_reinit")
        rand_model, _ = run.start_model(level, "random_prune")
        assert not torch.equal(reinit_model.state_dict()["2.weight"], init["2.weight"] * ticket["2.weight"])
        assert torch.equal(rand_model.state_dict()["2.weight"], init["2.weight"] * rand["2.weight"])
        trained = load_file(str(run.folder(level, "random_prune") / "model.safetensors"))
        assert torch.all(trained["2.weight"][~rand["2.weight"]] == 0)
    # Each level's control draws its own weights, from the ticket's distribution.
    r1 = run.start_model(1, "random_reinit")[0].state_dict()["4.weight"]
    r2 = run.start_model(2, "random_reinit")[0].state_dict()["4.weight"]
    survivors = ticket["4.weight"]  # level 2's, a subset of level 1's
    assert not torch.equal(r1[survivors], r2[survivors])
    assert float(r2[survivors].std()) == pytest.approx(float(init["4.weight"].std()), rel=0.1)


class Killed(Exception):
    pass


KILL_SETTINGS = dict(levels=2, controls=["random_reinit"], rewind_iter=2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One run that nobody kills, for every kill below to be compared with."""
    folder = tmp_path_factory.mktemp("whole")
    data = write_idx(folder / "mnist")
    with torch_threads(1):  # as in the tests: sums over threads round differently
        rows = Lottery(tiny(data, **KILL_SETTINGS), folder / "run", progress=False).run()
    return data, rows, files(folder / "run")


@pytest.mark.parametrize("kill_at", [(0, "ticket", 3), (1, "random_reinit", 16), (2, "ticket", 20)])
def test_resume_after_a_kill_reaches_the_identical_result(uninterrupted, tmp_path, kill_at):
    data, whole_rows, whole_files = uninterrupted
    s = tiny(data, **KILL_SETTINGS)

    def kill(level, arm, it):
        if (level, arm, it) == kill_at:
            raise Killed

    with pytest.raises(Killed):
        Lottery(s, tmp_path / "killed", progress=False, on_iteration=kill).run()
    resumed = Lottery(s, tmp_path / "killed", progress=False).run()
    assert no_seconds(resumed) == no_seconds(whole_rows)
    b = files(tmp_path / "killed")
    assert whole_files.keys() == b.keys()
    for name, tensors in whole_files.items():
        assert all(torch.equal(tensors[k], b[name][k]) for k in tensors), name
    assert not (tmp_path / "killed" / "checkpoint.safetensors").exists()


def test_resume_continues_from_the_checkpoint(idx_folder, tmp_path, monkeypatch):
    s = tiny(idx_folder, levels=0, iterations=30, checkpoint_every=10)
    seen = []

    def kill(level, arm, it):
        seen.append(it)
        if it == 25:
            raise Killed

    with pytest.raises(Killed):
        Lottery(s, tmp_path / "run", progress=False, on_iteration=kill).run()
    seen.clear()
    Lottery(s, tmp_path / "run", progress=False, on_iteration=lambda lv, arm, it: seen.append(it)).run()
    assert seen == list(range(21, 31))  # from the checkpoint at 20, not from the start


def test_the_same_settings_never_train_twice(idx_folder, tmp_path, monkeypatch):
    s = tiny(idx_folder, levels=1)
    first = Lottery(s, tmp_path / "run", progress=False).run()
    monkeypatch.setattr(Lottery, "train", lambda *a: pytest.fail("trained again"))
    assert Lottery(replace(s, checkpoint_every=3), tmp_path / "run", progress=False).run() == first
    # More levels continue the same folder: levels and controls are not part of the hash.
    assert replace(s, levels=5, controls=["random_prune"]).digest() == s.digest()
    assert replace(s, lr=1e-3).digest() != s.digest()
    with pytest.raises(ConnectomeError, match="other settings"):
        Lottery(replace(s, lr=1e-3), tmp_path / "run", progress=False)


def test_a_second_process_on_the_same_folder_is_refused(idx_folder, tmp_path):
    import fcntl
    run = Lottery(tiny(idx_folder, levels=0), tmp_path / "run", progress=False)
    with open(tmp_path / "run" / ".lock", "w") as held:  # what a first process holds while it trains
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConnectomeError, match="being trained by another process"):
            run.run()
    assert run.run()[0]["level"] == 0  # once it is gone, the run goes on


def test_cli_writes_csv_png_and_every_level(idx_folder, tmp_path):
    out = tmp_path / "run"
    args = [str(RECIPES / "lottery-lenet300-mnist.yaml"), "--data", f"mnist:{idx_folder}", "--levels", "2",
            "--iterations", "10", "--eval-every", "5", "--val-samples", "50", "--controls", "random_reinit,random_prune",
            "--control-levels", "2", "--out", str(out), "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(lottery, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = (out / "lottery.csv").read_text().splitlines()
    assert lines[0].startswith("level,arm,percent_remaining,kept,early_stop_iter")
    assert [tuple(line.split(",")[:2]) for line in lines[1:]] == [("0", "ticket"), ("1", "ticket"), ("2", "ticket"),
                                                                 ("2", "random_reinit"), ("2", "random_prune")]
    assert (out / "lottery.png").read_bytes()[:4] == b"\x89PNG"
    for level in range(3):
        assert (out / "levels" / str(level) / "mask.safetensors").exists()
        assert (out / "levels" / str(level) / "model.safetensors").exists()


@pytest.mark.parametrize("args, message", [
    (["--controls", "random_everything"], "controls must be one of random_reinit, random_prune"),
    (["--fc-rate", "1.5"], "--fc-rate must be below 1"),
    (["--rewind-iter", "10"], "rewind_iter"),
    (["--control-levels", "3"], "control levels"),
    (["--data", "cifar10:{cifar}"], "takes"),
])
def test_bad_input_is_a_connectome_error(idx_folder, tmp_path, args, message):
    cifar = write_cifar(tmp_path / "cifar", per_batch=2, n_test=2)
    args = [a.format(cifar=cifar) for a in args]
    base = [str(RECIPES / "lottery-lenet300-mnist.yaml"), "--data", f"mnist:{idx_folder}", "--levels", "1",
            "--iterations", "10", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(lottery, base + args)
    assert isinstance(result.exception, ConnectomeError), result.output
    assert message in str(result.exception)


# The paper's numbers (Frankle & Carbin 2019, Figure 2, Appendices G.1 and H.1).
PAPER = {
    "lottery-lenet300-mnist.yaml": dict(model="lenet_300_100_mnist", lr=1.2e-3, iterations=50000, fc_rate=0.2, output_rate=0.1),
    "lottery-conv2-cifar10.yaml": dict(model="conv2", lr=2e-4, iterations=20000, conv_rate=0.1, fc_rate=0.2, output_rate=0.1),
    "lottery-conv4-cifar10.yaml": dict(model="conv4", lr=3e-4, iterations=25000, conv_rate=0.1, fc_rate=0.2, output_rate=0.1),
    "lottery-conv6-cifar10.yaml": dict(model="conv6", lr=3e-4, iterations=30000, conv_rate=0.15, fc_rate=0.2, output_rate=0.1),
}


@pytest.mark.parametrize("recipe", sorted(PAPER))
def test_recipes_carry_the_paper_settings(recipe):
    s = LotterySettings.from_recipe(str(RECIPES / recipe))
    assert {k: getattr(s, k) for k in PAPER[recipe]} == PAPER[recipe]
    assert s.batch_size == 60 and s.val_samples == 5000 and s.eval_every == 100
    assert "1803.03635" in (RECIPES / recipe).read_text()


@pytest.mark.parametrize("recipe, controls", [("lottery-conv2-cifar10.yaml", []), ("lottery-conv4-cifar10.yaml", []),
                                             ("lottery-conv6-cifar10.yaml", ["random_prune"])])
def test_conv_recipes_run_on_tiny_cifar_files(tmp_path, recipe, controls):
    cifar = write_cifar(tmp_path / "cifar")
    s = LotterySettings.from_recipe(str(RECIPES / recipe), dict(data=f"cifar10:{cifar}", iterations=2, eval_every=1,
                                                                batch_size=8, val_samples=10, levels=1,
                                                                controls=controls, device="cpu"))
    run = Lottery(s, tmp_path / "run", progress=False)
    rows = run.run()
    assert [(r["level"], r["arm"]) for r in rows] == [(0, "ticket"), (1, "ticket")] + [(1, c) for c in controls]
    layers = rows[1]["layers"]
    assert [v["kind"] for v in layers.values()].count("output") == 1
    for name, layer in layers.items():
        rate = {"conv": s.conv_rate, "fc": s.fc_rate, "output": s.output_rate}[layer["kind"]]
        assert layer["kept"] == layer["total"] - round(rate * layer["total"]), name
        assert (layer["kind"] == "conv") == (Mask.load(run.folder(1, "ticket") / "mask.safetensors")[name].ndim == 4)
    for r in rows[2:]:
        assert {n: v["kept"] for n, v in r["layers"].items()} == {n: v["kept"] for n, v in layers.items()}
