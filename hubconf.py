"""torch.hub entrypoints for connectome's published pruned weights, one per architecture in
weights/registry.json:

    model = torch.hub.load("owner/connectome", "mobilenet_v3_large", weights="connectome_1m_in1k")
    model = torch.hub.load("/path/to/connectome", "lenet_300_100", weights="connectome_50pct_fmnist",
                           source="local")
    preprocess = model.transforms()

Each entrypoint is `connectome.weights.load("<arch>.<weights>")`; see its docstring.
"""

dependencies = ["torch", "torchvision", "safetensors", "numpy"]


def _entrypoint(arch: str, tags: list[str]):
    def entrypoint(weights: str | None = None, registry=None, via: str = "model", progress: bool = True, **kwargs):
        from connectome.weights import load

        if weights is None:
            raise ValueError(f"{arch}: pass weights=, one of {', '.join(tags)}")
        if kwargs:
            raise TypeError(f"{arch}: the pruned weights fix the architecture; unexpected {', '.join(kwargs)}")
        name = weights if weights.startswith(f"{arch}.") else f"{arch}.{weights}"
        return load(name, registry=registry, via=via, progress=progress)

    entrypoint.__name__ = entrypoint.__qualname__ = arch
    entrypoint.__doc__ = (f"{arch} with connectome's pruned weights, in eval mode, `.transforms()` attached.\n\n"
                          f"    weights: {' | '.join(tags)}\n"
                          f"    via: 'model' (pruned checkpoint) or 'mask' (mask file applied to the base weights)")
    return entrypoint


def _register() -> None:
    # torch.hub lists every public callable of this module: generate them, import nothing public.
    from connectome.weights import read_registry

    archs: dict[str, list[str]] = {}
    for name, entry in read_registry()[0].items():
        archs.setdefault(entry["arch"], []).append(name.split(".", 1)[1])
    for arch, tags in archs.items():
        globals()[arch] = _entrypoint(arch, tags)


_register()
