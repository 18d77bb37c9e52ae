"""The core validations on a real store: a clean store passes, and each injected fault is named.

The store is built once per module from six real stocks with the pipeline steps; each test damages
its own copy. Faults are written straight into the bin files, as a disk or a stray tool would.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_store, copy_inputs, run_pipeline

from precompute_assets.build import intermediates, pipeline
from precompute_assets.build.buckets import bucket_keys, bucket_of
from precompute_assets.build.written import WrittenStock, read_written, record_written
from precompute_assets.indicators.registry import FAMILIES
from precompute_assets.settings import Settings
from precompute_assets.store.calendar import read_calendar, write_calendar
from precompute_assets.store.layout import StoreLayout
from precompute_assets.store.reader import StoreReader
from precompute_assets.validation.completeness import validate_completeness, validate_completeness_buckets
from precompute_assets.validation.consistency import validate_consistency, validate_consistency_buckets
from precompute_assets.validation.gx_runner import CODE, GxSession, Rule
from precompute_assets.validation.integrity import damaged_stocks, validate_integrity, validate_integrity_buckets
from precompute_assets.validation.quality import validate_quality, validate_quality_buckets

VALIDATIONS = (validate_completeness, validate_quality, validate_consistency, validate_integrity)

CODES = ("SH600000", "SH600519", "SZ000001", "SZ000538", "SZ000792", "SZ302132")
BATCHES = 2


@pytest.fixture
def store(built: Settings, tmp_path: Path) -> Settings:
    """A private copy of the built store and its input, free to damage."""
    shutil.copytree(built.qlib_data_path, tmp_path / "qlib_data", symlinks=True)
    shutil.copytree(built.parquet_data_path, tmp_path / "parquet")
    return Settings(parquet_data_path=tmp_path / "parquet", qlib_data_path=tmp_path / "qlib_data", batches=BATCHES)


def alter(settings: Settings, code: str, field: str, row: int, value: float) -> str:
    """Overwrite one stored value in place (same file size); returns its date."""
    layout = StoreLayout(settings.qlib_data_path)
    path = layout.bin_path(code, field)
    data = np.fromfile(path, dtype="<f4")
    data[1 + row] = value
    path.write_bytes(data.tobytes())
    return f"{read_calendar(layout)[int(data[0]) + row]:%Y-%m-%d}"


def by_column(result, code: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for failure in result.failures:
        if failure.code == code:
            found.setdefault(failure.column, []).append(failure)
    return found


def test_a_fresh_store_passes_every_validation_with_a_gx_summary(built):
    for bucket in bucket_keys(BATCHES):
        for validate in VALIDATIONS:
            result = validate(built, bucket)
            assert result.passed, result.describe()
            assert result.statistics["evaluated_expectations"] > 0
            assert result.statistics["success_percent"] == 100.0
            assert result.expectations and all(e["success"] for e in result.expectations), result.check
    assert validate_completeness(built, None).checked["stocks_checked"] == len(CODES)


def test_an_out_of_range_value_fails_quality_naming_stock_column_and_date(store):
    date = alter(store, "SZ000792", "rsi14", 800, 150.0)
    alter(store, "SZ000792", "bollinger_upper", 900, 0.5)  # below the middle band
    alter(store, "SH600519", "volume", 10, -5.0)
    result = validate_quality(store, None)
    assert not result.passed and result.blocking
    assert result.failing_stocks == ["SH600519", "SZ000792"]
    assert {"rsi14", "bollinger_upper", "volume"} <= set(result.failing_columns)
    rsi = by_column(result, "SZ000792")["rsi14"][0]
    assert rsi.rows == 1 and date in rsi.example and "150" in rsi.example and "[0, 100]" in rsi.problem
    assert result.statistics["unsuccessful_expectations"] >= 3


def test_infinities_fail_quality_and_a_high_nan_share_only_warns(store):
    assert bucket_of("SH600000", BATCHES) != bucket_of("SZ000538", BATCHES)
    alter(store, "SH600000", "alpha_010", 100, np.inf)
    path = StoreLayout(store.qlib_data_path).bin_path("SZ000538", "cci")
    data = np.fromfile(path, dtype="<f4")
    data[1 + len(data) // 2 :] = np.nan  # half the column lost
    path.write_bytes(data.tobytes())
    result = validate_quality(store, None)
    infinite = by_column(result, "SH600000")["alpha_010"][0]
    assert infinite.blocking and infinite.problem == "infinite values"
    nan_share = by_column(result, "SZ000538")["cci"][0]
    assert not nan_share.blocking and "NaN share" in nan_share.problem
    only_warning = validate_quality(store, bucket_of("SZ000538", BATCHES))
    assert not only_warning.passed and not only_warning.blocking


def test_an_altered_base_field_or_indicator_fails_consistency_naming_them(store):
    date = alter(store, "SH600000", "close", 1234, 1.0)
    alter(store, "SZ000538", "alpha_001", 2000, 0.987)
    result = validate_consistency(store, None, indicators=["alpha_001", "RSI14"], sample_stocks=len(CODES))
    assert result.failing_stocks == ["SH600000", "SZ000538"]
    close = by_column(result, "SH600000")["close"][0]
    assert close.problem == "differs from the input" and f"first_mismatch={date}" in close.example
    assert "stored=1" in close.example
    assert by_column(result, "SZ000538")["alpha_001"][0].problem == "differs from a recomputation from the input"
    assert "rsi14" in result.checked["sampled_columns"] and result.checked["sampled_stocks"] == sorted(CODES)


def test_the_indicator_sample_is_seeded_and_catches_an_alteration_it_draws(store):
    first = validate_consistency(store, None, seed=7)
    assert first.checked["sampled_columns"] != validate_consistency(store, None, seed=8).checked["sampled_columns"]
    code, column = first.checked["sampled_stocks"][0], first.checked["sampled_columns"][0]
    alter(store, code, column, 3000, 12345.0)
    again = validate_consistency(store, None, seed=7)
    assert again.checked == first.checked  # the same seed draws the same sample
    assert (code, column) in {(f.code, f.column) for f in again.failures}


def test_completeness_names_a_missing_stock_a_missing_column_and_missing_dates(store):
    layout = StoreLayout(store.qlib_data_path)
    layout.stock_dir("SZ302132").unlink()  # the stock is gone from features/
    layout.bin_path("SH600519", "kdj_k").unlink()
    frame = pd.read_parquet(store.parquet_data_path / "SZ000001.parquet")
    extra = frame.iloc[[-1]].assign(date=pd.Timestamp("2026-06-01"))
    pd.concat([frame, extra]).to_parquet(store.parquet_data_path / "SZ000001.parquet")
    result = validate_completeness(store, None)
    assert result.failing_stocks == ["SH600519", "SZ000001", "SZ302132"]
    assert by_column(result, "SZ302132")["*"][0].problem == "not in the store"
    assert by_column(result, "SH600519")["kdj_k"][0].problem == "no file in the store"
    missing = by_column(result, "SZ000001")
    assert "first_missing=2026-06-01" in missing["calendar"][0].example and "close" in missing


def test_a_bucket_with_an_unreadable_input_lists_it_without_failing(store):
    (store.parquet_data_path / "SZ000538.parquet").write_bytes(b"not parquet")
    result = validate_completeness(store, bucket_of("SZ000538", BATCHES))
    assert result.passed
    assert any("SZ000538" in line and "unreadable" in line for line in result.checked["inputs_skipped"])


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("truncate", "size differs"),
        ("overwrite", "checksum differs"),
        ("delete", "is missing"),
        ("stray", "not recorded"),
    ],
)
def test_integrity_names_a_damaged_file(store, damage, problem):
    layout = StoreLayout(store.qlib_data_path)
    path = layout.bin_path("SZ000792", "macd")
    payload = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(payload[:-40])
    elif damage == "overwrite":
        path.write_bytes(payload[:400] + b"\x00" * 8 + payload[408:])
    elif damage == "delete":
        path.unlink()
    else:
        (path.parent / "extra.day.bin").write_bytes(payload)
    result = validate_integrity(store, bucket_of("SZ000792", BATCHES))
    assert result.failing_stocks == ["SZ000792"]
    column = "extra" if damage == "stray" else "macd"
    assert [f.column for f in result.failures] == [column] and problem in result.failures[0].problem
    cheap = damaged_stocks(layout, CODES, verify_crc=damage == "overwrite")
    assert list(cheap) == ["SZ000792"] and problem in cheap["SZ000792"][0]


def test_integrity_counts_every_file_it_checked_and_names_only_what_fails(store):
    layout = StoreLayout(store.qlib_data_path)
    bins = sum(len(list(layout.stock_dir(code).glob("*.day.bin"))) for code in CODES)
    whole = validate_integrity(store, None).checked
    assert whole["files_checked"] == bins + len(CODES)  # every bin file, and each stock's calendar place
    layout.bin_path("SZ000792", "close").unlink()
    layout.bin_path("SZ000792", "rsi14").write_bytes(b"\x00" * 8)
    damaged = validate_integrity(store, None)
    assert damaged.checked["files_checked"] == whole["files_checked"]  # the missing file is still checked
    assert sorted((f.code, f.column) for f in damaged.failures) == [("SZ000792", "close"), ("SZ000792", "rsi14")]


def test_a_record_changed_after_a_check_read_it_is_read_again_by_the_next(store):
    layout = StoreLayout(store.qlib_data_path)
    bucket = bucket_of("SZ000792", BATCHES)
    assert validate_integrity(store, bucket).passed and validate_completeness(store, bucket).passed
    record = layout.stock_meta_path("SZ000792")
    meta = json.loads(record.read_text())
    meta["files"]["close"][1] ^= 1  # what the record says of one file, rewritten in place
    record.write_text(json.dumps(meta))
    assert [(f.code, f.column) for f in validate_integrity(store, bucket).failures] == [("SZ000792", "close")]
    record.write_text("{")  # unreadable
    assert validate_integrity(store, bucket).failing_columns == ["_stock.json"]
    assert "SZ000792" in validate_completeness(store, bucket).failing_stocks


def test_a_store_steps_record_replaced_after_a_check_read_it_is_read_again(tmp_path):
    """The checks of a run share one parse of each bucket's record; a retried store step replaces it."""
    work = tmp_path / "work"
    record_written(work, {"SZ000001": WrittenStock(10, {"close": (40, 7)})})
    assert read_written(work) == {"SZ000001": WrittenStock(10, {"close": (40, 7)})}
    record_written(work, {"SZ000002": WrittenStock()})  # what a second attempt adds
    assert read_written(work) == {"SZ000001": WrittenStock(10, {"close": (40, 7)}), "SZ000002": WrittenStock()}
    path, tmp = work / "store_written.json", work / "replacement.tmp"
    tmp.write_text(path.read_text().replace('"rows_before":10', '"rows_before":20'))  # the same size
    tmp.replace(path)
    assert read_written(work)["SZ000001"].rows_before == 20
    path.unlink()
    assert read_written(work) is None


def test_integrity_names_every_stock_a_calendar_mismatch_misplaces(store):
    layout = StoreLayout(store.qlib_data_path)
    calendar = read_calendar(layout)
    write_calendar(layout, calendar.delete(2000))  # a day lost from calendars/day.txt
    result = validate_integrity(store, None)
    assert result.failing_stocks == sorted(CODES)  # every stock spans that day
    assert set(result.failing_columns) == {"calendars/day.txt"}
    assert all("calendar mismatch" in f.problem for f in result.failures)


def test_a_damaged_bucket_is_repaired_by_rebuilding_only_that_bucket(store, built):
    layout = StoreLayout(store.qlib_data_path)
    bucket = bucket_of("SZ000538", BATCHES)
    other = [c for c in CODES if bucket_of(c, BATCHES) != bucket]
    before = {code: layout.stock_dir(code).resolve() for code in other}
    layout.bin_path("SZ000538", "rsi14").write_bytes(layout.bin_path("SZ000538", "rsi14").read_bytes()[:100])
    layout.bin_path("SZ302132", "close").unlink()
    assert set(damaged_stocks(layout, CODES)) == {"SZ000538", "SZ302132"}

    pipeline.build_bars(store, bucket)
    for family in FAMILIES:
        pipeline.build_family(store, bucket, family)
    pipeline.write_bucket(store, bucket, FAMILIES)

    assert validate_integrity(store, None).passed
    assert {code: layout.stock_dir(code).resolve() for code in other} == before  # the other bucket untouched
    fresh, repaired = StoreReader(StoreLayout(built.qlib_data_path)), StoreReader(layout)
    for code in ("SZ000538", "SZ302132"):
        fields = fresh.fields(code)
        pd.testing.assert_frame_equal(repaired.read(code, fields), fresh.read(code, fields))


def test_after_an_update_the_checks_judge_what_it_wrote_and_the_audit_the_rest(tmp_path):
    """The checks after a daily update read its new days and appended bytes: they catch a flipped byte
    in a new value, a missing append and a file one value too long; damage to older rows is the
    audit's (the checks without a run's record) to find."""
    codes, new_days = ("SH600519", "SZ000792"), 5
    parquet = copy_inputs(codes, tmp_path / "parquet")
    full = {code: pd.read_parquet(parquet / f"{code}.parquet") for code in codes}
    for code, frame in full.items():
        frame.iloc[:-new_days].to_parquet(parquet / f"{code}.parquet")
    settings = build_store(parquet, tmp_path / "qlib_data", batches=1)
    for code, frame in full.items():
        frame.to_parquet(parquet / f"{code}.parquet")
    run_pipeline(settings)
    bucket = bucket_keys(1)[0]
    written = read_written(intermediates.bucket_dir(settings.work_path, bucket))
    assert sorted(written) == list(codes) and all(w.rows_before > 0 and w.appended for w in written.values())

    def after_update(validate, **options):
        return validate(settings, bucket, written, **options)

    for validate in VALIDATIONS:
        result = after_update(validate)
        assert result.passed, result.describe()
    quality = after_update(validate_quality)
    assert quality.checked["rows_checked"] == new_days * len(codes) and quality.checked["stocks_profiled"] == 0

    layout = StoreLayout(settings.qlib_data_path)
    close = layout.bin_path("SZ000792", "close")
    original = close.read_bytes()
    flipped = bytearray(original)
    flipped[-7] ^= 0x01  # the low byte of the stock's second-to-last close, a new day
    close.write_bytes(bytes(flipped))
    integrity = after_update(validate_integrity)
    assert integrity.failing_stocks == ["SZ000792"] and integrity.failing_columns == ["close"]
    assert "checksum differs" in integrity.describe() and "appended by this run" in integrity.describe()
    assert after_update(validate_consistency).failing_columns == ["close"]  # base fields against the input
    close.write_bytes(original)

    ma5 = layout.bin_path("SH600519", "ma5")
    original = ma5.read_bytes()
    ma5.write_bytes(original[:-4])  # the last append is missing
    missing = after_update(validate_integrity)
    assert missing.failing_stocks == ["SH600519"] and "truncated or extended" in missing.describe()
    assert after_update(validate_completeness).failing_columns == ["ma5"]
    ma5.write_bytes(original + original[-4:])  # one value too long
    longer = after_update(validate_integrity)
    assert longer.failing_columns == ["ma5"] and f"found {len(original) + 4}" in longer.describe()
    ma5.write_bytes(original)

    stored = StoreReader(layout).read("SZ000792", ["rsi14"])["rsi14"]
    date = alter(settings, "SZ000792", "rsi14", len(stored) - 2, 150.0)  # an appended day
    appended = after_update(validate_quality)
    assert appended.failing_stocks == ["SZ000792"] and date in by_column(appended, "SZ000792")["rsi14"][0].example
    alter(settings, "SZ000792", "rsi14", len(stored) - 2, float(stored.iloc[-2]))  # put back as it was

    date = alter(settings, "SH600519", "rsi14", 800, 150.0)  # history, after it passed when it was written
    for validate in VALIDATIONS:
        assert after_update(validate).passed  # not what the update wrote
    assert validate_integrity(settings, bucket).failing_stocks == ["SH600519"]  # the audit's scope
    audit_quality = validate_quality(settings, bucket)
    assert (
        audit_quality.failing_stocks == ["SH600519"]
        and date in by_column(audit_quality, "SH600519")["rsi14"][0].example
    )


def test_buckets_judged_together_get_what_each_judged_alone_gets(store):
    """A run's checks judge all its buckets in one GX validation per frame; each bucket's failures,
    statistics and expectation results are still those of a validation of that bucket alone."""
    buckets = bucket_keys(BATCHES)
    victim = "SZ000792"
    alter(store, victim, "rsi14", 800, 150.0)
    alter(store, victim, "close", 900, 1.0)
    ma5 = StoreLayout(store.qlib_data_path).bin_path(victim, "ma5")
    ma5.write_bytes(ma5.read_bytes()[:-4])
    (store.parquet_data_path / "SH600000.parquet").unlink()  # one bucket misses a stock
    together = {
        "completeness": validate_completeness_buckets(store, dict.fromkeys(buckets)),
        "quality": validate_quality_buckets(store, dict.fromkeys(buckets)),
        "consistency": validate_consistency_buckets(store, dict.fromkeys(buckets), dict.fromkeys(buckets, 3)),
        "integrity": validate_integrity_buckets(store, dict.fromkeys(buckets)),
    }
    alone = {
        "completeness": lambda bucket: validate_completeness(store, bucket),
        "quality": lambda bucket: validate_quality(store, bucket),
        "consistency": lambda bucket: validate_consistency(store, bucket, seed=3),
        "integrity": lambda bucket: validate_integrity(store, bucket),
    }
    failed = set()
    for check, results in together.items():
        for bucket, result in zip(buckets, results, strict=True):
            reference = alone[check](bucket)
            assert result.scope == bucket and result.failures == reference.failures, check
            assert result.statistics == reference.statistics and result.expectations == reference.expectations
            assert result.checked == reference.checked
            failed |= {(check, bucket)} if not result.passed else set()
    victim_bucket = bucket_of(victim, BATCHES)
    assert {(c, victim_bucket) for c in ("quality", "consistency", "integrity", "completeness")} <= failed
    assert all(bucket == victim_bucket for _, bucket in failed)  # the other bucket passes beside it


def test_groups_judged_in_one_gx_validation_report_what_gx_reports_on_each_alone():
    """The split statistics against Great Expectations run on each group's frame by itself."""
    import great_expectations as gx

    frames = {
        "a": pd.DataFrame({"code": ["X", "Y", "Z", "V"], "high": [1.0, 150.0, np.nan, 3.0], "low": [0.5, 1, 2, 4]}),
        "b": pd.DataFrame({"code": ["W"], "high": [50.0], "low": [np.nan]}),
        "c": pd.DataFrame({"code": pd.Series([], dtype=object), "high": [], "low": []}),
    }
    expectations = [
        gx.expectations.ExpectColumnValuesToBeBetween(column="high", min_value=0, max_value=100),
        gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="high", column_B="low", or_equal=True, ignore_row_if="either_value_is_missing"
        ),
    ]
    session = GxSession("together", list(frames))
    found = session.run("f", frames, [Rule(e, "broken", "high") for e in expectations], [CODE])
    for group, frame in frames.items():
        context = gx.get_context(mode="ephemeral")
        suite = context.suites.add(
            gx.ExpectationSuite(name=f"alone.{group}", expectations=[copy.copy(e) for e in expectations])
        )
        batch = (
            context.data_sources.add_pandas(group)
            .add_dataframe_asset(group)
            .add_batch_definition_whole_dataframe(group)
            .get_batch(batch_parameters={"dataframe": frame})
        )
        outcome = batch.validate(
            suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [CODE]}
        )
        reference = [
            {
                "success": r.success,
                "element_count": r.result.get("element_count"),
                "unexpected_count": r.result.get("unexpected_count"),
            }
            for r in outcome.results
        ]
        split = [
            {k: e[k] for k in ("success", "element_count", "unexpected_count")} for e in session.expectations[group]
        ]
        assert split == reference, group
        unexpected = sorted({row[CODE] for r in outcome.results for row in r.result.get("unexpected_index_list") or []})
        assert sorted({f.code for f in found[group]}) == unexpected
        assert session.summary(group)["unsuccessful_expectations"] == outcome.statistics["unsuccessful_expectations"]
    assert sorted((f.code, f.rows) for f in found["a"]) == [("V", 1), ("Y", 1)]
