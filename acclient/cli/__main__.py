"""``python -m acclient.cli``: the same as the ``ac`` console script."""

from acclient.cli.app import main

main()
