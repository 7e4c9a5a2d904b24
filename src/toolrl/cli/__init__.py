"""The `toolrl` command line: one module per command group, each with a ``register(app)`` function."""
