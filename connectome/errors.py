"""The one exception type for bad input: the CLI prints its message on one line and exits with 2."""


class ConnectomeError(Exception):
    pass


def reason(e: Exception) -> str:
    """The last line of an exception's message: what went wrong, without the library's preamble."""
    text = str(e).strip().splitlines()
    return text[-1][:200] if text else type(e).__name__
