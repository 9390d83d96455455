"""How the API answers: strict JSON (no NaN nor Infinity), files by plain names from one folder, and
job ids in paths as decimal integers."""

import json
import re
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import Response
from starlette.convertors import Convertor, register_url_convertor

from connectome.io import strict_json

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")


class JobId(Convertor):
    """`{job_id:jobid}`: decimal digits only (`6.0`, `-1`, `1e3` match no route: 404)."""
    regex = "[0-9]{1,30}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("jobid", JobId())


def dumps(value) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:  # a NaN loss, an Infinity a damaged row holds
        return json.dumps(strict_json(value), allow_nan=False)


def json_response(value, status_code: int = 200) -> Response:
    return Response(dumps(value), status_code=status_code, media_type="application/json")


def safe_file(folder: Path, name: str) -> Path:
    """`folder/name` if it is a plain file directly inside `folder`; 404 for anything else."""
    path = folder / name
    if (not SAFE_NAME.fullmatch(name) or ".." in name or path.is_symlink() or not path.is_file()
            or not path.resolve().is_relative_to(folder.resolve())):
        raise HTTPException(404, f"no file {name!r}")
    return path
