"""The command line as the tests run it, in this process (click's CliRunner), and what a refusal looks like."""

from click.testing import CliRunner

from connectome.cli import main

# A greedy magnitude prune of LeNet-300-100 on few images: a finished run in a few seconds.
FAST = ["--calib-samples", "400", "--eval-samples", "200", "--batch-size", "100", "--quiet", "--method", "greedy",
        "--score", "magnitude"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(r, code: int = 2) -> bool:
    """Exit `code`, one line of output, and no exception but the exit (no traceback)."""
    return r.exit_code == code and len(r.output.strip().splitlines()) == 1 and isinstance(r.exception, SystemExit)
