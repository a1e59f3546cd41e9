"""``python -m nbflow.cli``: the ``nbflow`` command."""

from nbflow.cli.common import main

main()
