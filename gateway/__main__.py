"""`python -m gateway ...`: the `gateway` command, for when the console script is not on PATH."""
from gateway.cli import main

main()
