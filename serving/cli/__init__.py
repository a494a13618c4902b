"""The ``leadval`` command: one module per command group, mounted by :mod:`serving.cli.app`."""
