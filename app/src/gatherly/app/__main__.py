"""`python -m gatherly.app` is the `gatherly` command."""

from gatherly.app.cli import main

main()
