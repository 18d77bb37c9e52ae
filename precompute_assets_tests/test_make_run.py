"""`make run`'s grouping of stale buckets into range runs."""

from precompute_assets.build.buckets import bucket_keys
from precompute_assets.cli.make_run import BUCKETS_PER_RUN_ENV, buckets_per_run, contiguous_groups

ORDER = bucket_keys(64)


def test_a_build_runs_eight_neighbouring_buckets_at_a_time(monkeypatch):
    monkeypatch.delenv(BUCKETS_PER_RUN_ENV, raising=False)
    todo = {bucket: "never built" for bucket in ORDER}
    groups = contiguous_groups(sorted(todo), ORDER, buckets_per_run(todo, workers=2))
    assert [len(g) for g in groups] == [8] * 8
    assert [b for g in groups for b in g] == ORDER


def test_a_daily_update_runs_one_range_per_worker(monkeypatch):
    monkeypatch.delenv(BUCKETS_PER_RUN_ENV, raising=False)
    todo = {bucket: "input changed" for bucket in ORDER}
    groups = contiguous_groups(sorted(todo), ORDER, buckets_per_run(todo, workers=2))
    assert [len(g) for g in groups] == [32, 32]
    mixed = {**todo, ORDER[5]: "calendar history changed"}
    assert buckets_per_run(mixed, workers=2) == 8


def test_the_setting_wins_and_gaps_split_ranges(monkeypatch):
    monkeypatch.setenv(BUCKETS_PER_RUN_ENV, "3")
    todo = {bucket: "input changed" for bucket in ORDER[:4] + ORDER[6:8]}
    groups = contiguous_groups(sorted(todo), ORDER, buckets_per_run(todo, workers=2))
    assert groups == [tuple(ORDER[:3]), (ORDER[3],), tuple(ORDER[6:8])]
