"""One module per CLI command; each exposes ``<name>_command(registry, ...) -> int``.

The click handlers in ``justpipe.cli.main`` import these lazily and turn the returned
value into the process exit status (0 = done, 1 = the command could not do its job).
"""
