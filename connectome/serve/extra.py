"""The `serve` extra's modules (FastAPI, uvicorn, httpx, pydantic), imported with one line that says
how to install them where they are missing."""

import importlib


def need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        from connectome.errors import ConnectomeError
        raise ConnectomeError(f"{module} is missing: pip install 'connectome[serve]'") from None
