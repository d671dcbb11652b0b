"""The ``vpbatch`` command line: a click group (``cli.main``) and one small module per command."""
