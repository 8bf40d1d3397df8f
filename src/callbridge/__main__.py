"""`python -m callbridge` is the `callbridge` command."""

from callbridge.server.cli import main

main()
