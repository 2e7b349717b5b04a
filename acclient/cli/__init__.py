"""``ac``: the operator's command line (``ac --help``; ``docs/cli.md``).

    ac agents                                   who is there
    ac exec -r web --fanout --group -- uptime   run a command on every node of a role, identical outputs folded
    ac jobs | ac job ID | ac logs -f ID         what ran, how it ended, what it said
    ac wait ID | ac kill ID                     take a command sent earlier, or stop it
    ac doctor                                   what is wrong with the bus

``main`` is the console script; ``parser.py`` builds the parser (standard library only: the build makes the
completions and the man page from it), ``app.py`` connects and turns failures into one line and an exit status.
"""

from acclient.cli.app import main

__all__ = ["main"]
