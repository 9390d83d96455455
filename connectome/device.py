"""Which device a run uses: `auto` is the GPU when there is one."""

from connectome.errors import ConnectomeError


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConnectomeError(f"--device {name}: no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith(("cuda:", "mps", "xpu")):
        raise ConnectomeError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    return name
