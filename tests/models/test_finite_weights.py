"""Generated base weights that are not floating point or not finite: refused at load in one line that
names the tensor, by every command that reads base weights (issue 25, row 3)."""

import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectome.cli import main
from connectome.io import save_state
from connectome.models.load import load_model

BASE = {k: v.clone() for k, v in load_model("lenet_300_100").module.state_dict().items()}
NAMES = sorted(BASE)

bad_values = st.sampled_from([float("nan"), float("inf"), float("-inf")])
bad_dtypes = st.sampled_from([torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), where=st.floats(0, 1, exclude_max=True), count=st.integers(1, 3),
       value=bad_values, dtype=st.one_of(st.none(), bad_dtypes), command=st.sampled_from(["eval", "prune"]))
def test_non_finite_or_integer_base_weights_are_one_line_naming_the_tensor(tmp_path_factory, name, where, count,
                                                                          value, dtype, command):
    folder = tmp_path_factory.mktemp("w")
    state = {k: v.clone() for k, v in BASE.items()}
    flat = state[name].view(-1)
    if dtype is None:
        start = int(where * flat.numel())
        flat[start:start + count] = value
        hit = min(count, flat.numel() - start)
        message = f"tensor {name} holds {hit:,} non-finite value"
    else:
        state[name] = state[name].to(dtype)
        message = f"tensor {name} is {str(dtype).replace('torch.', '')}, not floating point"
    save_state(folder / "w.safetensors", state)
    args = {"eval": ["eval", "lenet_300_100", "--eval-samples", "10"],
            "prune": ["prune", "lenet_300_100", "--remove", "1%", "--quiet", "--out", str(folder / "run")]}[command]
    r = CliRunner().invoke(main, [*args, "--weights-file", str(folder / "w.safetensors")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and message in r.output, r.output
    assert not (folder / "run").exists()
