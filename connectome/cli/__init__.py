"""The `connectome` command line. Bad input ends with one line on stderr and exit code 2; a file
system that refuses a write (no such folder, no permission, a full disk) with one line and exit
code 1; Ctrl-C (SIGINT) with exit code 130, as a shell reports a process that SIGINT ended."""

import sys

import click

from connectome.errors import ConnectomeError


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConnectomeError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # every write is atomic: what failed left the old files as they were
            click.echo(f"error: {os_reason(e)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:  # click would print "Aborted!" and exit 1: a script cannot tell it from a failure
            click.echo("interrupted", err=True)
            sys.exit(130)


def os_reason(e: OSError) -> str:
    """An OSError on one line: what the system said, and the file it said it of."""
    what = e.strerror or type(e).__name__
    return f"{e.filename}: {what}" if e.filename is not None else what


@click.group(cls=Group)
@click.version_option(package_name="connectome")
def main():
    """Prune pretrained networks by zeroing weights only: every weight of a result equals its
    pretrained value or zero."""


# One module per command (or family of commands); none of them imports this package.
from connectome.cli.compare import compare  # noqa: E402
from connectome.cli.evaluate import eval_  # noqa: E402
from connectome.cli.lottery import lottery  # noqa: E402
from connectome.cli.models import models  # noqa: E402
from connectome.cli.prune import prune, verify  # noqa: E402
from connectome.cli.serve import cancel, download, jobs, serve, submit  # noqa: E402
from connectome.cli.train import train  # noqa: E402
from connectome.cli.weights import weights  # noqa: E402

for command in (prune, verify, compare, eval_, models, train, weights, lottery, serve, submit, jobs, cancel, download):
    main.add_command(command)
