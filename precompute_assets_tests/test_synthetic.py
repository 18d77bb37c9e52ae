"""The synthetic market generator: deterministic, and shaped like real A-share vendor data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precompute_assets.input.synthetic import generate_market, generate_stock, trading_days

START, END = "2022-01-04", "2024-12-31"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    out = tmp_path_factory.mktemp("market")
    paths = generate_market(out, 30, START, END, seed=11, listed_midway=2, with_amount=1)
    return {p.stem: pd.read_parquet(p) for p in paths}


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first = generate_market(tmp_path / "a", 12, START, END, seed=3)
    second = generate_market(tmp_path / "b", 12, START, END, seed=3)
    other = generate_market(tmp_path / "c", 12, START, END, seed=4)
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
    assert not pd.read_parquet(first[5]).equals(pd.read_parquet(other[5]))


def test_generate_stock_is_deterministic_for_the_generator_state() -> None:
    days = trading_days(START, END)
    a = generate_stock("SH600000", days, np.random.default_rng(5), with_amount=True)
    b = generate_stock("SH600000", days, np.random.default_rng(5), with_amount=True)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["date", "open", "high", "low", "close", "volume", "factor", "amount"]


def test_file_stems_use_mixed_spellings_and_columns_are_typed(market: dict[str, pd.DataFrame]) -> None:
    assert {"600000.SH", "600002_SH", "sh600003", "SH600001"} <= set(market)
    assert any(stem.startswith("BJ") or stem.endswith("BJ") for stem in market)
    for frame in market.values():
        assert pd.api.types.is_datetime64_any_dtype(frame["date"])
        assert all(frame[c].dtype == np.float64 for c in frame.columns if c != "date")
        assert frame["date"].is_monotonic_increasing and frame["date"].is_unique
        assert not frame.isna().any().any()


def test_ohlc_is_consistent(market: dict[str, pd.DataFrame]) -> None:
    for stem, f in market.items():
        tol = 1e-9 * f["high"]
        assert (f["low"] <= np.minimum(f["open"], f["close"]) + tol).all(), stem
        assert (f["high"] >= np.maximum(f["open"], f["close"]) - tol).all(), stem
        assert (f["low"] > 0).all() and (f["volume"] >= 0).all() and (f["factor"] > 0).all(), stem


def test_some_stock_lists_midway(market: dict[str, pd.DataFrame]) -> None:
    calendar = trading_days(START, END)
    firsts = {stem: f["date"].iloc[0] for stem, f in market.items()}
    late = [stem for stem, first in firsts.items() if first > calendar[len(calendar) // 5]]
    assert len(late) == 2
    for stem in late:  # a late listing still trades on every calendar day after it lists
        assert market[stem]["date"].tolist() == list(calendar[calendar >= firsts[stem]])


def test_suspended_rows_are_flat_with_zero_volume(market: dict[str, pd.DataFrame]) -> None:
    suspended = pd.concat([f[f["volume"] == 0] for f in market.values()])
    assert len(suspended) > 0
    for column in ("open", "high", "low"):
        np.testing.assert_allclose(suspended[column], suspended["close"], rtol=1e-12)
    for f in market.values():  # flat at the previous close (in raw terms: no factor step while suspended)
        raw = f["close"] / f["factor"]
        idle = (f["volume"] == 0).to_numpy()
        np.testing.assert_allclose(raw[idle], raw.shift(1)[idle], rtol=1e-12)


def test_amount_is_vwap_times_volume(market: dict[str, pd.DataFrame]) -> None:
    with_amount = [f for f in market.values() if "amount" in f.columns]
    assert len(with_amount) == 1
    f = with_amount[0]
    trading = f["volume"] > 0
    vwap = f["amount"][trading] / f["volume"][trading]  # adjusted VWAP (volume is raw / factor)
    assert (vwap >= f["low"][trading] * (1 - 1e-6)).all() and (vwap <= f["high"][trading] * (1 + 1e-6)).all()
    assert (f["amount"][~trading] == 0).all()


def test_trading_days_per_year() -> None:
    days = trading_days("2012-01-01", "2030-12-31")
    per_year = pd.Series(1, index=days).groupby(days.year).sum()
    assert len(per_year) == 19
    assert per_year.between(235, 250).all(), per_year.to_dict()
    assert (days.dayofweek < 5).all()
    for holiday in ("2024-01-01", "2024-02-12", "2024-05-01", "2024-10-01", "2023-01-23"):
        assert pd.Timestamp(holiday) not in days


def test_daily_moves_stay_within_the_price_limit(market: dict[str, pd.DataFrame]) -> None:
    steps = 0
    for stem, f in market.items():
        raw = f["close"] / f["factor"]
        # On an ex-date the limit applies to the ex-right price: prev raw close * prev factor / factor.
        reference = raw.shift(1) * f["factor"].shift(1) / f["factor"]
        move = (raw / reference - 1)[f["volume"] > 0].dropna()
        assert (move.abs() <= 0.10 + 1e-9).all(), (stem, move.abs().max())
        steps += int((f["factor"].diff().dropna() != 0).sum())
        assert (f["factor"].diff().dropna() >= 0).all(), stem  # back-adjustment factors only grow
    assert steps > 0  # the check above did cover ex-dates
