"""The learned method (connectome.pruning.methods.learned) on the shipped LeNet-300-100, a few hundred images."""

import json

import pytest
import torch
from click.testing import CliRunner

from connectome.errors import ConnectomeError
from connectome.evaluate import evaluate
from connectome.io import check_invariant
from connectome.pruning import scores
from connectome.pruning.methods.base import schedule
from connectome.pruning.methods.learned import Learned, initial_scores
from connectome.pruning.settings import CompareSettings, PruneSettings
from connectome.pruning.setup import Runtime, prepare
from connectome.pruning.state import FILE, LoopState

QUIET = Runtime(progress=False)


def settings(**kw) -> PruneSettings:
    base = dict(model="lenet_300_100", remove="80%", criterion="learned", calib_samples=300, eval_samples=200,
                batch_size=50, learn_epochs=2, learn_points=3, device="cpu")
    return PruneSettings(**{**base, **kw})


def test_exact_counts_frozen_weights_and_invariant(tmp_path):
    s = settings()
    setup = prepare(s)
    base = {k: v.clone() for k, v in setup.base_state.items()}
    seen = []

    def check(row):  # at every count of the schedule: exactly k removed, nothing else changed
        state = setup.loaded.module.state_dict()
        report = check_invariant(state, base)
        seen.append((row["removed"], setup.flat.removed(), report.ok, report.zeroed))

    run = Learned(setup, tmp_path / "run", runtime=QUIET, on_step=check)
    assert not any(p.requires_grad for p in setup.loaded.module.parameters())
    run.run()
    counts = schedule(setup.target, 3)
    assert counts[-1] == setup.target == round(0.8 * setup.flat.prunable())
    assert seen == [(0, 0, True, 0)] + [(k, k, True, k) for k in counts]
    assert [r["phase"] for r in run.log] == ["dense", "learned", "learned", "learned"]
    assert all(r["accepted"] and r["eval_top1"] is not None and r["accept_loss"] is not None for r in run.log)
    # The scores moved: the final mask is not global magnitude's.
    assert not torch.equal(run.scores.detach(), initial_scores(setup.flat))
    assert not any(p.grad is not None for p in setup.loaded.module.parameters())


def test_learned_mask_beats_magnitude_on_acceptance_loss(tmp_path):
    """400 decision images, 100 acceptance images, 80% removed in two counts."""
    s = settings(calib_samples=500, learn_epochs=10, learn_points=2)
    setup = prepare(s)
    flat = setup.flat
    k = setup.target
    scores = flat.base.abs().masked_fill(~flat.eligible, float("inf"))
    flat.mask.fill_(True)
    flat.mask[torch.topk(scores, k, largest=False).indices] = False
    flat.write()
    magnitude = evaluate(setup.loaded.module, setup.accept, s.batch_size)
    flat.reset()
    run = Learned(setup, tmp_path / "run", runtime=QUIET)
    run.run()
    learned = run.log[-1]
    assert learned["removed"] == k
    print(f"acceptance loss at {k:,} removed: learned {learned['accept_loss']:.4f}, magnitude {magnitude.loss:.4f}")
    assert learned["accept_loss"] < magnitude.loss


def test_resume_after_stopping_equals_uninterrupted(tmp_path):
    s = settings(learn_epochs=3)  # 240 decision images, batches of 50: 15 batches over 3 counts
    whole = Learned(prepare(s), tmp_path / "whole", runtime=QUIET, chunk=2)
    whole.run()

    first = Learned(prepare(s), tmp_path / "cut", runtime=QUIET, chunk=2)
    first.run(max_chunks=3)  # stops inside the second count (batches 5..9), mid-epoch
    assert first.pos["point"] == 1 and first.pos["batch"] == 6
    watched = LoopState.read(tmp_path / "cut" / FILE)  # watchers read a learned state as a loop's
    assert watched.step_index == 1 and len(watched.log) == 2
    with pytest.raises(ConnectomeError, match="--resume"):
        Learned(prepare(s), tmp_path / "cut", runtime=QUIET)
    with pytest.raises(ConnectomeError, match="differ|settings"):  # another learning rate is another run
        Learned(prepare(settings(learn_epochs=3, learn_lr=1e-3)), tmp_path / "cut", resume=True, runtime=QUIET)
    second = Learned(prepare(s), tmp_path / "cut", resume=True, runtime=QUIET, chunk=2)
    second.run()
    assert torch.equal(second.scores.detach(), whole.scores.detach())
    assert torch.equal(second.flat.mask, whole.flat.mask)
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]
    assert strip(second.log) == strip(whole.log)
    again = Learned(prepare(s), tmp_path / "cut", resume=True, runtime=QUIET)  # a finished run resumes to its end
    again.run()
    assert torch.equal(again.flat.mask, whole.flat.mask) and len(again.log) == len(whole.log)


def test_prune_cli_writes_a_run_that_verify_accepts(tmp_path):
    from connectome.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--criterion", "learned", "--remove", "50%",
                                  "--calib-samples", "300", "--eval-samples", "200", "--batch-size", "100",
                                  "--learn-epochs", "2", "--learn-points", "2", "--out", str(out), "--quiet"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["method"] == "learned" and manifest["result"]["removed"] == 133100
    assert len((out / "curve.csv").read_text().splitlines()) == 1 + 3  # header, dense, two counts
    r = CliRunner().invoke(main, ["verify", str(out)])
    assert r.exit_code == 0 and "OK" in r.output and "zeroed 133,100" in r.output, r.output


def test_learned_is_a_method_not_a_score_and_settings_keep_digests():
    with pytest.raises(ConnectomeError, match="unknown score 'learned'"):
        scores.get("learned")
    with pytest.raises(ConnectomeError, match="score must be one of"):
        PruneSettings.from_mapping({"model": "lenet_300_100", "remove": "50%", "method": "greedy", "score": "learned"})
    learned = dict(model="lenet_300_100", remove="50%", method="learned")
    plain = PruneSettings(**learned)
    assert plain.digest() == PruneSettings(**learned, learn_lr=1e-4, learn_epochs=40.0, learn_points=10).digest()
    assert plain.digest() != PruneSettings(**learned, learn_lr=1e-3).digest()
    # Runs learned before the default became 40 epochs were named without the setting, and still are.
    before = PruneSettings(**learned, learn_epochs=10.0)
    assert "learn_epochs" not in before.hashed() and "learn_epochs" in plain.hashed()
    # Selection on acceptance is the default now: a run named before it (no learn_select) is another run.
    assert plain.hashed()["learn_select"] is True
    assert "learn_select" not in PruneSettings(**learned, learn_select=False).hashed()
    # The learned settings decide nothing in a greedy run: they stay out of its name and its resume checks.
    greedy = PruneSettings(model="lenet_300_100", remove="50%", method="greedy")
    assert greedy.digest() == PruneSettings(model="lenet_300_100", remove="50%", method="greedy",
                                            learn_lr=1e-3, learn_epochs=3).digest()
    assert greedy.diff({**greedy.to_dict(), "learn_lr": 1e-3}) == []


def test_compare_runs_learned_through_its_grid(tmp_path):
    from connectome.pruning.compare import compare

    cs = CompareSettings(model="lenet_300_100", remove="60%", methods=["learned", "magnitude"], points=2, seeds=1,
                         calib_samples=300, eval_samples=200, batch_size=100, learn_epochs=2, device="cpu")
    result = compare(cs, tmp_path / "cmp", progress=False)
    learned = [r for r in result["rows"] if r["method"] == "learned"]
    assert [r["removed"] for r in learned] == schedule(round(0.6 * result["prunable"]), 2)
    assert (tmp_path / "cmp" / "runs" / "learned-seed0" / FILE).is_file()


def test_selection_keeps_the_best_scores_on_acceptance(tmp_path):
    """A learning rate that wrecks the mask: without selection the last scores are kept and acceptance
    suffers; with it each count keeps its best checked scores, never worse than the count's start
    (global magnitude at the first count)."""
    s = settings(remove="50%", learn_points=2, learn_epochs=4, learn_lr=0.5, learn_select=False)
    wrecked = Learned(prepare(s), tmp_path / "wrecked", runtime=QUIET)
    wrecked.run()
    kept = Learned(prepare(settings(remove="50%", learn_points=2, learn_epochs=4, learn_lr=0.5)), tmp_path / "kept",
                   runtime=QUIET)
    kept.run()
    setup = prepare(settings(remove="50%", learn_points=2))
    flat, k = setup.flat, schedule(setup.target, 2)[0]
    flat.mask.fill_(True)
    flat.mask[torch.topk(flat.base.abs().masked_fill(~flat.eligible, float("inf")), k, largest=False).indices] = False
    flat.write()
    magnitude = evaluate(setup.loaded.module, setup.accept, 50)
    first = kept.log[1]
    assert first["checks"][0][1] == pytest.approx(magnitude.loss, abs=1e-5)  # the count's start is a candidate
    for i, row in enumerate(kept.log[1:]):  # the recorded count is one of its checks, and none beats it
        loss, top1 = row["accept_loss"], row["accept_top1"]
        assert any(abs(c[1] - loss) < 1e-5 and c[2] == pytest.approx(top1) for c in row["checks"])
        assert not any(c[1] < loss - 1e-5 and c[2] >= top1 for c in row["checks"])
        assert row["checks"][0][0] == kept._span(i)[0] and row["batches"] <= 10
    assert first["accept_loss"] <= magnitude.loss + 1e-6
    assert wrecked.log[-1]["accept_loss"] > kept.log[-1]["accept_loss"] + 0.05, (wrecked.log[-1], kept.log[-1])


def test_learned_bounds_are_refused_before_anything_is_written(tmp_path):
    from connectome.cli import main

    out = tmp_path / "run"
    for flags, message in ((["--learn-points", "1000000"], "learn-points"), (["--learn-lr", "1e300"], "learn-lr"),
                           (["--learn-epochs", "1e300"], "learn-epochs")):
        r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--remove", "30", *flags, "--calib-samples", "300",
                                      "--out", str(out), "--quiet"])
        assert r.exit_code != 0 and message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and not out.exists(), r.output


def test_training_views_are_a_function_of_the_seed():
    from connectome.data.augment import TrainingViews

    views, x = TrainingViews(), torch.randn(4, 3, 32, 40)
    a = views(x, 7)
    assert a.shape == x.shape and torch.equal(a, views(x, 7)) and not torch.equal(a, views(x, 8))
    assert not torch.equal(a, x)
    before = torch.random.get_rng_state()
    views(x, 9)
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's random stream is untouched
    flat = torch.randn(4, 784)
    assert views(flat, 7) is flat


def _judged(ref_loss, ref_hit, loss, hit) -> bool:
    """The paired rule on made-up acceptance images: a check (loss, hit per image) against the best."""
    from types import SimpleNamespace

    double = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    best = SimpleNamespace(best_images=torch.stack([double(ref_loss), double(ref_hit)]))
    return Learned._paired_better(best, SimpleNamespace(per_sample=double(loss), per_correct=double(hit)))


def test_paired_acceptance_judges_image_by_image():
    n = 160
    ref_loss, ref_hit = [0.7] * n, [1.0] * 140 + [0.0] * 20
    lower = [0.6] * n  # every image's loss lower by 0.1: far beyond its standard error
    assert _judged(ref_loss, ref_hit, lower, ref_hit)
    one_lost = ref_hit.copy()
    one_lost[0] = 0.0
    assert _judged(ref_loss, ref_hit, lower, one_lost)  # one image of 160 is within one standard error
    two_lost = one_lost.copy()
    two_lost[1] = 0.0
    assert not _judged(ref_loss, ref_hit, lower, two_lost)
    noisy = [0.7 + (0.3 if i % 2 else -0.31) for i in range(n)]  # lower on average by far less than its noise
    assert not _judged(ref_loss, ref_hit, noisy, ref_hit)


def test_paired_and_distilled_runs_are_their_own_runs(tmp_path):
    base = settings()
    paired, distilled = settings(learn_accept="paired"), settings(learn_distill=0.5)
    assert len({base.digest(), paired.digest(), distilled.digest()}) == 3
    assert PruneSettings(**{**base.to_dict(), "learn_accept": "pareto"}).digest() == base.digest()  # the default
    run = Learned(prepare(paired), tmp_path / "paired", runtime=QUIET)
    run.run()
    assert [r["removed"] for r in run.log][-1] == run.setup.target and run.best_images is not None


def test_a_distilled_objective_is_zero_where_the_mask_removes_nothing(tmp_path):
    """KL of the dense model's predictions from themselves: the dense model is its own best student."""
    setup = prepare(settings(learn_distill=1.0))
    run = Learned(setup, tmp_path / "run", runtime=QUIET)
    x = torch.stack([setup.decision[i][0] for i in range(8)])
    y = torch.tensor([setup.decision[i][1] for i in range(8)])
    assert abs(run._loss(x, y, 0).item()) < 1e-6
    assert run._loss(x, y, setup.target).item() > 1e-3


def test_restart_never_starts_a_count_below_magnitude_on_acceptance(tmp_path):
    """--learn-restart: each count starts from the better of the previous count's scores and |w|, so its
    kept mask is at least as good on the acceptance images as global magnitude's at that count."""
    s = settings(learn_restart=True, learn_epochs=3, calib_samples=3000, learn_points=10)
    setup = prepare(s)
    run = Learned(setup, tmp_path / "run", runtime=QUIET)
    run.run()
    flat, order = setup.flat, torch.argsort(setup.flat.base.abs().masked_fill(~setup.flat.eligible, float("inf")))
    for row in run.log[2:]:  # the first count starts from |w| anyway
        flat.mask.fill_(True)
        flat.mask[order[:row["removed"]]] = False
        flat.write()
        magnitude = evaluate(setup.loaded.module, setup.accept, 50)
        assert (row["accept_top1"], -row["accept_loss"]) >= (magnitude.top1, -magnitude.loss) or \
            row["accept_top1"] > magnitude.top1


def test_restart_is_a_setting_of_its_own():
    s = settings(learn_restart=True)
    assert PruneSettings(**{**s.to_dict(), "learn_restart": False}).digest() != s.digest()
