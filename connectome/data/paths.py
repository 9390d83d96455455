"""Where datasets live on this machine when a spec names no folder: the download cache
($CONNECTOME_DATA, default ~/.cache/connectome/data) and Debian's Fashion-MNIST package. Loaders
read these names at call time, so a test may point them elsewhere."""

import os
from pathlib import Path

CACHE = Path(os.environ.get("CONNECTOME_DATA", Path.home() / ".cache" / "connectome" / "data"))
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
