"""How much work a job asks for, counted in images passed through the model, and the bounds a
server puts on it before the job is stored.

A job's settings can ask for any amount of work the validator accepts (`learn_epochs: 1e300`, a
million points of a learned curve, a batch as large as the data ten times over); on a shared server
one token holder would then hold the only worker forever. The bounds follow from the model and the
data where they can (no more learned points than weights to remove, as the run itself checks, and no
batch larger than the largest pass; the settings bound DataLoader workers by the cores), and the
total work from a per-server limit (`connectome serve --max-work`), since what a team's server may
spend on one job is its owner's choice.

The count is a lower bound of what the run does, counted by each method (its `work`): a learned mask
trains `learn_epochs` passes over the decision split and evaluates every point of its schedule; the
greedy loop takes at least as many steps as the count needs at the largest step size, each a
statistics pass over the decision split and a measurement on the acceptance split. So a job refused
here certainly asks for more.
"""

from connectome.errors import ConnectomeError
from connectome.serve.policy import SOURCE


def splits(s) -> tuple[int, int]:
    """(decision, acceptance) samples of the calibration split, as the run divides it."""
    n_accept = max(2, int(round(s.calib_samples * s.accept_fraction)))
    return s.calib_samples - n_accept, n_accept


def passes(s, target: int | None, prunable: int | None, evaluated: int | None) -> tuple[float, str]:
    """(images through the model, how they add up) at least, for the settings `s`; `target` and
    `prunable` where the model was counted, `evaluated` the evaluation samples where known. The method
    counts its own search; restore cycles are greedy steps after it."""
    from connectome.pruning.registry import METHODS

    decide, accept = splits(s)
    evals = evaluated or 0
    total, how = METHODS[s.method].work(s, decide, accept, evals, target, prunable)
    if s.restore_cycles:
        total += s.restore_cycles * (decide + accept) + evals * s.restore_cycles / s.eval_every
        how += f" + restore_cycles {s.restore_cycles:,} steps of {decide + accept:,}"
    return total, how


def check(s, policy, target: int | None, prunable: int | None, evaluated: int | None) -> None:
    """Raise ConnectomeError naming the field when `s` asks for more than this server gives one job."""
    if s.decides("learn_points") and target is not None and s.learn_points > target:
        raise ConnectomeError(f"{SOURCE}: learn_points {s.learn_points:,} exceeds the {target:,} weights the job "
                              f"removes (one point per count at most)")
    largest = max(s.calib_samples, s.eval_samples or evaluated or 0)
    if s.eval_samples is None and evaluated is None:
        largest = 0  # the evaluation split's size is unknown here: no bound from it
    if largest and s.batch_size > largest:
        raise ConnectomeError(f"{SOURCE}: batch_size {s.batch_size:,} exceeds the {largest:,} samples of the "
                              f"job's largest pass (a batch holds at most one pass)")
    total, how = passes(s, target, prunable, evaluated)
    if not total <= policy.max_work:  # also refuses an infinite count
        raise ConnectomeError(f"{SOURCE}: asks for at least {total:.3g} images through the model ({how}), "
                              f"over this server's limit of {policy.max_work:.3g} (connectome serve --max-work)")
