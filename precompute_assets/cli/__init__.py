"""Command-line entry points: `make run` (`cli.make_run`, which runs `cli.make_run_driver`) and the store
operations (`cli.operations`)."""
