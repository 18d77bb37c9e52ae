"""The Dagster shell: assets, checks, jobs, partitions, resources, sensors, schedules, the executor choice.

It decides what runs when and records what happened; the maths and the store are in the core below it.
"""
