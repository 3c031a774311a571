"""``python -m prepflow`` runs the command line, like the ``prepflow`` script."""

from prepflow.cli import main

main()
