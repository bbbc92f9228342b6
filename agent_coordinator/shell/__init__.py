"""The shell: the ``coordinator`` command line, on top of every other layer."""
