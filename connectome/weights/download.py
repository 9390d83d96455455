"""Hash-checked downloads of published files into torch.hub's cache (or a file beside a local registry)."""

import http.client
import os
import re
import urllib.error
import urllib.parse
from pathlib import Path

import torch

from connectome.errors import ConnectomeError
from connectome.models.load import file_sha256
from connectome.weights.registry import _is_url, _reason, get_entry, resolve

SHA256 = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    """Where torch.hub.load_state_dict_from_url keeps torchvision's weights (follows TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def pull(name: str, registry: str | Path | None = None, mask: bool = False, progress: bool = True) -> Path:
    """The verified local path of a published file (the model, or with `mask=True` the mask file).

    A file next to a local registry is used in place; a URL is downloaded once into torch's hub
    cache. A download whose sha256 differs from the entry is deleted and refused."""
    entry, base = get_entry(name, registry)
    return _fetch(name, entry["mask"] if mask else entry, base, progress)


def _shown(text: str) -> str:
    """A registry's string as one line of an error: control characters escaped, at most 200 characters."""
    return text.encode("unicode_escape").decode("ascii")[:200]


def _fetch(name: str, record: dict, base: str, progress: bool) -> Path:
    url, expected = record.get("url"), record.get("sha256")
    # A registry is anybody's file or server: its fields are checked before they are used
    if not isinstance(url, str) or not url or not isinstance(expected, str) or not SHA256.fullmatch(expected):
        raise ConnectomeError(f"registry entry {name!r} is malformed: each of its files needs a url and "
                              f"a sha256 of 64 lowercase hex digits")
    try:
        location = resolve(url, base)
        file_name = os.path.basename(urllib.parse.urlparse(location).path) if _is_url(location) else Path(location).name
    except ValueError as e:  # urllib's "Invalid IPv6 URL" and kin
        raise ConnectomeError(f"registry entry {name!r}: {_shown(url)} is not a URL or a path ({e})") from None
    found = torch.hub.HASH_REGEX.search(file_name)
    if not found or not expected.startswith(found.group(1)) or len(found.group(1)) < 8:
        raise ConnectomeError(f"{_shown(url)}: a published file is named NAME-<sha256 prefix>.ext, "
                              f"and its prefix must match the entry's sha256 {expected[:8]}")
    if not _is_url(location):
        path = Path(location)
        if not path.is_file():
            raise ConnectomeError(f"{name}: {_shown(str(path))} does not exist")
        if file_sha256(path) != expected:
            raise ConnectomeError(f"{_shown(str(path))} does not match the sha256 of {name}: it was changed after publishing")
        return path
    path = cache_dir() / file_name
    if path.is_file():
        if file_sha256(path) == expected:
            return path
        path.unlink()  # a damaged cached copy: fetch it again
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Writes a temporary file and moves it into place only when the full sha256 matches.
        torch.hub.download_url_to_file(location, str(path), hash_prefix=expected, progress=progress)
    except RuntimeError as e:
        if "invalid hash value" in str(e):
            raise ConnectomeError(f"{_shown(location)} does not match the sha256 of {name} ({expected[:8]}...): "
                                  f"download refused and deleted") from None
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise ConnectomeError(f"cannot download {_shown(location)} ({_reason(e)})") from None
    return path
