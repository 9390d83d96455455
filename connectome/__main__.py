"""`python -m connectome`: the command line."""

from connectome.cli import main

main()
