"""Jobs that are well-formed but impossible on this server, refused at submit time where the server
can know without running them: more weights to remove than the model has, more samples than the
data's split, a GPU on a server without one, a missing file, more work than the server gives one job
(connectome.serve.work).

What is cheap is checked: a model's prunable count comes from its architecture built without
weights (on the meta device where it can be, so nothing is allocated or downloaded), once per
(model, weights); a split's size from its data source (file headers and sizes, an image folder's
file names). What cannot be known cheaply (a user's model, data to download) is left to the run,
which fails with one clear line.
"""

import re
from functools import lru_cache
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.serve import work
from connectome.serve.policy import SOURCE, Policy
from connectome.sizes import parse_count


def check(s, policy: Policy, nproc: int) -> None:
    """Raise ConnectomeError naming the field when the settings `s` cannot run on this server."""
    from connectome.models.load import source_of

    _check_device(s.device, policy.gpus, nproc)
    source = source_of(s.model)
    if s.weights and not source.named_weights:
        raise ConnectomeError(f"{SOURCE}: weights names torchvision weights; use weights_file for other models")
    if s.weights_file and not Path(s.weights_file).is_file():
        raise ConnectomeError(f"{SOURCE}: weights_file {s.weights_file} is not a file")
    missing = None if s.weights_file else source.weights_missing(s.model)
    if missing:
        raise ConnectomeError(f"{SOURCE}: model {s.model} needs weights_file on this server: {missing}")
    sizes = _check_data(s, source.dataset(s.model))
    prunable = prunable_count(s.model, s.weights, tuple(s.include), tuple(s.exclude))
    if prunable == 0:
        raise ConnectomeError(f"{SOURCE}: include/exclude leave no prunable weights in {s.model}")
    target = None
    if prunable is not None:
        try:
            target = parse_count(s.remove, prunable)
        except ConnectomeError as e:
            if not s.remove.strip().endswith("%"):
                raise ConnectomeError(f"{SOURCE}: remove {e} of {s.model}") from None
    evaluated = s.eval_samples or (sizes[1] if sizes else None)
    work.check(s, policy, target, prunable, evaluated)


# --- device -----------------------------------------------------------------------------------------

_DEVICE = re.compile(r"auto|cpu|cuda(?::(\d+))?|(?:mps|xpu)(?::\d+)?")


def _check_device(device: str, gpus: int, nproc: int) -> None:
    m = _DEVICE.fullmatch(device)
    if not m:
        raise ConnectomeError(f"{SOURCE}: device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        if gpus == 0:
            raise ConnectomeError(f"{SOURCE}: device {device}: this server has no GPU")
        if m.group(1) is not None and int(m.group(1)) >= nproc:
            raise ConnectomeError(f"{SOURCE}: device {device}: a job sees its {nproc} GPU(s) as cuda:0"
                                  f"{f' to cuda:{nproc - 1}' if nproc > 1 else ''}")


# --- model ------------------------------------------------------------------------------------------

def prunable_count(model: str, weights: str | None, include: tuple = (), exclude: tuple = ()) -> int | None:
    """Weights of the conv and linear layers that include/exclude select (the run's prunable count,
    or more where a base weight is exactly zero); None where the server cannot build the model."""
    from connectome.pruning.flat import prunable_parameters

    module = architecture(model, weights)
    if module is None:
        return None
    return sum(p.numel() for p in prunable_parameters(module, include, exclude).values())


@lru_cache(maxsize=64)
def architecture(model: str, weights: str | None):
    """The model's architecture without weights, on the meta device (names and shapes only); None for
    a user's code (never imported by the server) or a model that does not build here."""
    import torch

    from connectome.models.load import source_of

    try:
        build = source_of(model).architecture(model, weights)
    except ConnectomeError as e:
        raise ConnectomeError(f"{SOURCE}: weights {weights!r}: {e}") from None
    if build is None:
        return None
    try:
        with torch.device("meta"):  # nothing allocated: most architectures build like this
            return build()
    except ConnectomeError:
        raise
    except Exception:
        pass
    try:  # some initialise with Python numbers read from tensors: build on the CPU, keep the shapes
        return build().to("meta")
    except ConnectomeError:
        raise
    except Exception:
        return None


# --- data -------------------------------------------------------------------------------------------

def _check_data(s, own_data: str | None) -> tuple[int, int] | None:
    """`own_data`: the data the model was made for, which a job without `data` runs on."""
    from connectome.data import check_spec

    data = s.data if s.data is not None else own_data
    if data is None:
        raise ConnectomeError(f"{SOURCE}: data is required for {s.model} (e.g. imagenet:/path/to/imagenet)")
    try:
        source, path = check_spec(data)
    except ConnectomeError as e:
        raise ConnectomeError(f"{SOURCE}: {e}") from None
    sizes = source.sizes(path) if path else source.release
    n_accept = max(2, int(round(s.calib_samples * s.accept_fraction)))
    if s.calib_samples - n_accept < 2:
        raise ConnectomeError(f"{SOURCE}: calib_samples {s.calib_samples} with accept_fraction {s.accept_fraction} "
                              f"leaves fewer than 2 samples for the statistics")
    if sizes is None:
        return None
    train, test = sizes
    if s.calib_samples > train:
        raise ConnectomeError(f"{SOURCE}: calib_samples {s.calib_samples:,} exceeds the {train:,} training samples of {data}")
    if s.eval_samples and s.eval_samples > test:
        raise ConnectomeError(f"{SOURCE}: eval_samples {s.eval_samples:,} exceeds the {test:,} evaluation samples of {data}")
    return sizes


def split_sizes(kind: str, path: str | None) -> tuple[int, int] | None:
    """(training, evaluation) samples of a data spec's folder where counting them is cheap, else None
    (no folder named: the server's own copy or a download, left to the run)."""
    from connectome.data import data_source_of

    return data_source_of(kind).sizes(path) if path else None
