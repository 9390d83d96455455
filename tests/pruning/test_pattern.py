"""N:M patterns: groups, room, the hard bound in every selection path, verify, and the CLI's refusals."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

from connectome.cli import main
from connectome.pruning.flat import FlatWeights, prunable_parameters
from connectome.pruning.pattern import Pattern
from connectome.pruning.verify import verify

FAST = ["--calib-samples", "600", "--eval-samples", "300", "--batch-size", "100", "--quiet"]


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 1), nn.Flatten(), nn.Linear(8, 3))


def test_parse_refuses_what_is_not_n_of_m():
    assert Pattern.parse("2:4") == Pattern(2, 4) and str(Pattern.parse(" 1 : 8 ")) == "1:8"
    for bad in ("4:2", "2:2", "2/4", "", "2:4:1", "-1:4", "1:65"):
        with pytest.raises(ValueError, match="pattern"):
            Pattern.parse(bad)


def test_groups_follow_rows_and_skip_layers_that_do_not_divide():
    flat = FlatWeights(prunable_parameters(tiny()))
    p = Pattern(2, 4)
    # The depthwise kernel (rows of 9) does not take part; the 1x1 conv (rows of 4) and the linear
    # layer (rows of 8) do: 32 + 24 weights in 8 + 6 groups.
    assert p.layers({n: flat.params[n].shape for n in flat.names}) == ["1.weight", "3.weight"]
    g = p.groups(flat)
    assert bool((g[:36] == -1).all())
    assert g[36:].tolist() == [i // 4 for i in range(56)]
    assert p.capacity(flat) == 28
    p.restrict(flat)
    assert flat.prunable() == 56


def test_allowed_never_overfills_a_group_and_a_full_prefix_is_the_pattern():
    flat = FlatWeights(prunable_parameters(tiny()))
    p = Pattern(2, 4)
    p.restrict(flat)
    gen = torch.Generator().manual_seed(1)
    order = torch.randperm(len(flat.base), generator=gen)
    order = order[flat.eligible[order]]
    fit = p.allowed(order, flat)
    assert len(fit) == p.capacity(flat) == 28
    for k in (5, 17, 28):  # every prefix stays within each group's room
        flat.mask.fill_(True)
        flat.mask[fit[:k]] = False
        ids, room = p.room(flat)
        assert int(room.min()) >= 0 and flat.removed() == k
    flat.write()
    assert p.holds({n: flat.params[n].detach() for n in flat.names}) == []
    # Room counts what is already zero: after the full pattern nothing more fits.
    assert len(p.allowed(order, flat)) == 0


def test_base_zeros_count_toward_a_group():
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    assert Pattern(2, 4).removes({"w": w}) == 1 + 2  # the first group needs one more zero, the second two
    assert Pattern(2, 4).holds({"w": w}) == ["w"]


@pytest.mark.parametrize("how", [["--criterion", "magnitude"], ["--criterion", "connectome", "--restore-cycles", "2", "--min-step", "0.02", "--step", "0.05",
                                  "--max-step", "0.2"],
                                 ["--criterion", "learned", "--learn-epochs", "0.5", "--learn-points", "2"]],
                         ids=["magnitude", "loop-with-swaps", "learned"])
def test_prune_with_pattern_gives_2_of_4_and_verifies(tmp_path, how):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--pattern", "2:4", "--remove", "50%", "--out", str(out),
                                  *how, *FAST], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    state = load_file(str(out / "model.safetensors"))
    names = ["2.weight", "4.weight", "6.weight"]
    assert all(n in state for n in names)
    assert Pattern(2, 4).holds({n: state[n] for n in names}) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["pattern"] == "2:4"
    assert manifest["result"]["removed"] == manifest["result"]["prunable"] // 2
    verdict = verify(out)
    assert verdict.ok and not verdict.warnings, (verdict.problems, verdict.warnings)


def test_one_shot_pattern_keeps_the_largest_two_of_every_four(tmp_path):
    out = tmp_path / "cmp"
    r = CliRunner().invoke(main, ["compare", "lenet_300_100", "--pattern", "2:4", "--remove", "50%", "--methods",
                                  "magnitude", "--points", "2", "--seeds", "1", "--out", str(out), *FAST],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = (out / "compare.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[2]) for line in rows] == [66550, 133100]
    # The full point's mask, rebuilt by hand: in every group of 4, the 2 of smallest magnitude go.
    from connectome.models.load import load_model
    from connectome.pruning.settings import PruneSettings
    from connectome.pruning.setup import prepare
    setup = prepare(PruneSettings(model="lenet_300_100", remove="50%", pattern="2:4", calib_samples=600,
                                  eval_samples=300))
    base = {k: v for k, v in load_model("lenet_300_100").module.state_dict().items()}
    w = base["4.weight"].reshape(-1, 4).abs()
    expect = torch.ones_like(w, dtype=torch.bool).scatter_(1, w.argsort(1)[:, :2], False)
    flat = setup.flat
    order = torch.argsort(flat.base.abs().masked_fill(~flat.eligible, float("inf")), stable=True)
    flat.mask.fill_(True)
    flat.mask[Pattern(2, 4).allowed(order[:flat.prunable()], flat)] = False
    got = flat.split(flat.mask)["4.weight"].reshape(-1, 4)
    assert torch.equal(got, expect)


def test_the_pattern_share_means_the_full_pattern_beside_base_zeros(tmp_path):
    """A base with zeros of its own: "50%" of 2:4 is the full pattern, fewer than half its weights."""
    from safetensors.torch import save_file
    from connectome.models.load import load_model
    from connectome.pruning.settings import PruneSettings
    from connectome.pruning.setup import prepare
    state = {k: v.clone() for k, v in load_model("lenet_300_100").module.state_dict().items()}
    state["4.weight"][0, :3] = 0.0  # one group holds 3 zeros: it needs no removal; its weights are 3 fewer
    save_file(state, str(tmp_path / "base.safetensors"))
    setup = prepare(PruneSettings(model="lenet_300_100", remove="50%", pattern="2:4", calib_samples=600,
                                  weights_file=str(tmp_path / "base.safetensors")))
    assert setup.flat.prunable() == 266200 - 3
    assert setup.target == Pattern(2, 4).capacity(setup.flat) == 133100 - 2


def test_more_than_the_pattern_removes_is_refused_and_nothing_written(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--pattern", "2:4", "--remove", "60%", "--out", str(out),
                                  *FAST])
    assert r.exit_code != 0
    assert "more than the 2:4 pattern removes" in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()
    r = CliRunner().invoke(main, ["prune", "lenet_300_100", "--pattern", "4:2", "--remove", "10%", "--out", str(out)])
    assert r.exit_code == 2 and "pattern" in r.output and not out.exists()
