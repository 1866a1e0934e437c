"""``python -m flyswatter.cli``: the same command line as the installed ``flyswatter``."""

from flyswatter.cli import main

main()
