"""The bearer token, one word of visible ASCII, as the server and its clients read it from a file or
an option: the same rules on both sides."""

import os
import re
import secrets
import stat
from pathlib import Path

from connectome.errors import ConnectomeError
from connectome.io import read_bounded

TOKEN_FILE_LIMIT = 4096  # a token file holds one short line: /dev/zero is not read for ever


def check_token(token: str, what: str) -> str:
    """A bearer token as an HTTP header can carry it: one word of visible ASCII (RFC 6750)."""
    if not token:
        raise ConnectomeError(f"{what} is empty: it must hold the token, on one line")
    lines = token.splitlines()
    if len(lines) > 1:
        raise ConnectomeError(f"{what} holds {len(lines)} lines: it must hold the token alone, on one line")
    if not re.fullmatch(r"[!-~]+", token):
        raise ConnectomeError(f"{what} holds spaces, control characters or non-ASCII letters: "
                              f"a token is one word of visible ASCII")
    return token


def read_token_file(path: Path) -> str:
    """The token a file holds (a trailing newline aside)."""
    data = read_bounded(path, TOKEN_FILE_LIMIT, f"token file {path}", "it must hold the token alone, on one line")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConnectomeError(f"token file {path} holds bytes that are not ASCII: a token is one word of visible ASCII") from None
    return check_token(text.strip(), f"token file {path}")


def read_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in `path`; a new random one, written with mode 0600, if the file is missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token_file(path), False
    except OSError as e:  # no such folder, no permission: the server cannot keep its token there
        raise ConnectomeError(f"token file {path}: {e.strerror}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def readable_by_others(path: Path) -> bool:
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def client_token(token: str | None, token_file: str | None) -> str | None:
    """A client's token: the option's (or $CONNECTOME_TOKEN's), else the file's, else none."""
    if token is not None:
        return check_token(token, "--token (or $CONNECTOME_TOKEN)")
    return read_token_file(Path(token_file)) if token_file else None
