"""Store operations in plain Python (no Dagster), one module each: `backup`, `restore`, `cleanup`,
`disk_space` (the guard before writing), `lock` (bucket and store write locks across hosts).

Command line: `python -m precompute_assets.cli.operations {backup,restore,list,cleanup}`; the Dagster
asset and jobs in `precompute_assets.defs.operations` call the same functions.
"""
