"""The one exception type for bad input: the CLI prints its message on one line and exits with 2."""


class ConnectomeError(Exception):
    pass
