"""The weights registry: its records and how a file's location resolves.

The registry (weights/registry.json) holds one entry per checkpoint, named timm-style `arch.tag`
(`lenet_300_100.connectome_50pct_fmnist`). Each entry points at two files: the pruned model and the
compact mask (packed bits), both named `name-<first 8 hex of sha256>.safetensors`, the convention
that `torch.hub.load_state_dict_from_url(check_hash=True)` checks. Downloads go where torch.hub puts
torchvision's weights (`torch.hub.get_dir()/checkpoints/<file name>`), through torch.hub's own
downloader, and are verified against the full sha256 of the entry.

A relative `url` resolves against the registry's own location (a folder or an http(s) URL), so a
registry and its files can be committed, copied or served together.

A local registry is updated under an exclusive lock on its folder, read afresh inside it, and
written to a temporary file renamed over it: concurrent publishes (commands, or the service's
threads) each add their entry, and a reader sees the old registry or the new one, never half.
"""

import contextlib
import difflib
import fcntl
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from connectome.errors import ConnectomeError
from connectome.io import write_text
from connectome.models.load import WEIGHTS_DIR

REGISTRY = WEIGHTS_DIR / "registry.json"
FORMAT = "connectome.registry/1"
# No '-' in a name: torch.hub's HASH_REGEX takes the first "-<hex>." of a file name as its hash.
# Matched whole (fullmatch): `$` would also match before a final newline, and a name with one makes a
# registry entry and a file name that nobody can pull.
# A name becomes file names (NAME-<hash>.safetensors, NAME.mask-<hash>...): 150 characters keep them
# under the usual 255-byte limit of a file name.
NAME_RE = re.compile(r"(?=.{3,150}$)[a-z_][a-z0-9_]*\.[a-z0-9_]+")
MAX_BYTES = 16 << 20  # a registry lists entries, not weights: far more than any real one holds
ENTRY_KEYS = ("url", "sha256", "size", "base", "mask", "state_sha256", "meta")


@dataclass(frozen=True)
class Weights:
    """torchvision's `Weights` record (url, transforms, meta), plus the registry name and entry."""
    name: str
    url: str
    transforms: Callable[[], Any]  # builds the eval preprocessing, as torchvision's `weights.transforms()`
    meta: dict
    entry: dict


# --- the registry ---------------------------------------------------------------------------------

def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(str(s)).scheme in ("http", "https")


def read_registry(registry: str | Path | None = None) -> tuple[dict[str, dict], str]:
    """The entries of a registry file or URL, and the location relative urls resolve against."""
    source = str(registry or REGISTRY)
    if _is_url(source):
        try:
            with urllib.request.urlopen(source, timeout=30) as r:
                data = _parse(r.read(MAX_BYTES + 1), source)
        except (urllib.error.URLError, OSError) as e:
            raise ConnectomeError(f"cannot read the registry {source} ({_reason(e)})") from None
        except ValueError:
            raise ConnectomeError(f"{source} is not a JSON registry") from None
    else:
        path = Path(source)
        if not path.is_file():
            if registry is None:  # no entry published yet: an empty default registry
                return {}, str(path.parent)
            raise ConnectomeError(f"registry {path} does not exist")
        with open(path, "rb") as f:
            data = _parse(f.read(MAX_BYTES + 1), str(path))
        source = str(path.resolve())
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConnectomeError(f"{source} is not a connectome weights registry (format {found!r})")
    entries = data.get("weights")
    if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and all(k in e for k in ENTRY_KEYS) and isinstance(e["mask"], dict) and
            isinstance(e["base"], dict) for e in entries.values()):
        raise ConnectomeError(f"{source}: malformed registry (every entry of 'weights' needs {', '.join(ENTRY_KEYS)})")
    return entries, _parent(source)


def _parse(raw: bytes, source: str):
    """A registry's JSON, bounded: no larger than MAX_BYTES, no nesting deep enough to exhaust the parser."""
    if len(raw) > MAX_BYTES:
        raise ConnectomeError(f"{source} is over {MAX_BYTES >> 20} MB: not a weights registry")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ConnectomeError(f"{source} is not a JSON registry") from None


@contextlib.contextmanager
def locked_registry(registry: Path):
    """The entries of the local registry file `registry` (none if it does not exist yet), read while
    this block holds its folder locked: no other publish reads or writes it until the block ends.
    The folder itself is the lock (flock on a directory), so no lock file is left beside the registry."""
    folder = registry.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, or by the kernel if this process dies
        yield read_registry(registry)[0] if registry.exists() else {}
    finally:
        os.close(fd)


def write_registry(registry: Path, entries: dict[str, dict]) -> None:
    """Write the registry whole (atomically: a reader sees the old file or the new one); call it inside
    `locked_registry`, with the entries it gave."""
    write_text(registry, json.dumps({"format": FORMAT, "weights": dict(sorted(entries.items()))}, indent=2) + "\n")


def summary(name: str, entry: dict) -> dict:
    """One line of the registry, as `connectome weights list` and the service's /api/weights show it."""
    try:
        (dataset, metrics), = entry["meta"]["_metrics"].items()
        return {"name": name, "base": entry["base"]["model"], "removed": int(entry["removed"]),
                "sparsity": float(entry["sparsity"]), "top1": float(metrics["acc@1"]), "dataset": str(dataset),
                "size": int(entry["size"]), "mask_size": int(entry["mask"]["size"]), "url": str(entry["url"]),
                "mask_url": str(entry["mask"]["url"])}
    except KeyError as e:  # a hand-edited or foreign registry: name the entry and what it lacks
        raise ConnectomeError(f"registry entry {name!r} is malformed: it has no {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError):
        raise ConnectomeError(f"registry entry {name!r} is malformed: its sizes, counts or metrics are not numbers") from None


def _parent(source: str) -> str:
    return urllib.parse.urljoin(source, ".") if _is_url(source) else str(Path(source).parent)


def get_entry(name: str, registry: str | Path | None = None) -> tuple[dict, str]:
    entries, base = read_registry(registry)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see `connectome weights list`)"
        raise ConnectomeError(f"no published weights named {name!r}{hint}")
    return entries[name], base


def resolve(url: str, base: str) -> str:
    """A file's location: absolute http(s) as is, a relative url against the registry's location."""
    if _is_url(url):
        return url
    return urllib.parse.urljoin(base, url) if _is_url(base) else str(Path(base) / url)



def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None)
    return str(reason if reason is not None and not isinstance(e, urllib.error.HTTPError) else e)[:200]
