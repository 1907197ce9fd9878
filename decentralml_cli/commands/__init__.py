"""The command handlers, one module per role: what a task's creator runs (``creator``), what a
contributor runs (``contributor``), and the read-only listings anyone runs (``inspect``).

Each handler takes the parsed arguments and returns the exit status; the parser that routes
to them, and the handling of refusals and Ctrl-C, are in ``decentralml_cli.app``.
"""
