"""Command-line entry points: `make run`'s driver (`cli.make_run`) and the store operations (`cli.operations`)."""
