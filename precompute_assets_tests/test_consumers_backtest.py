"""Backtests: the same trades and metrics with and without the store, under the A-share rules.

Parity runs every strategy twice on real csi300_daily data (store vs. everything computed from the
input). The rules are checked against the raw input prices: lots of 100 real shares, no buy at a
limit-up close, no sell at a limit-down close, no trade on a suspended day, T+1, and the cost rule.
A buy-and-hold sleeve is checked against the price path of the input file, and multi_factor's
TopkDropout replay (`engine="replay"`, the default) against Qlib's own `TopkDropoutStrategy` backtest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from consumers_fixtures import CODES, CSI300, shared_store

from precompute_assets.consumers import STRATEGIES, backtest_report, load_multiple_stocks_with_indicators, run_backtest
from precompute_assets.consumers.market_rules import MarketRules
from precompute_assets.consumers.portfolio import simulate
from precompute_assets.settings import Settings

START, END = "2021-01-01", "2022-12-31"
PARAMS = {"multi_factor": {"topk": 2, "n_drop": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return shared_store(tmp_path_factory)


@pytest.fixture(scope="module")
def results(store: Settings) -> dict[tuple[str, bool], object]:
    return {
        (name, stored): run_backtest(name, CODES, START, END, stored, settings=store, **PARAMS.get(name, {}))
        for name in STRATEGIES
        for stored in (True, False)
    }


@pytest.fixture(scope="module")
def raw() -> dict[str, pd.DataFrame]:
    """The input files as the vendor gives them (back-adjusted prices, factor, raw volume)."""
    return {code: pd.read_parquet(CSI300 / f"{code}.parquet").set_index("date") for code in CODES}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_same_trades_and_metrics_with_and_without_the_store(results: dict, name: str) -> None:
    stored, computed = results[(name, True)], results[(name, False)]
    pd.testing.assert_frame_equal(stored.trades, computed.trades)
    pd.testing.assert_series_equal(stored.equity, computed.equity)
    assert stored.metrics == computed.metrics
    assert stored.metrics["trades"] == len(stored.trades) > 0
    assert set(stored.metrics) == {
        "total_return", "annual_return", "sharpe", "max_drawdown", "win_rate", "turnover", "trades"
    }  # fmt: skip
    assert all(s["computed"] == [] for s in stored.sources.values())
    assert all(s["from_store"] == [] for s in computed.sources.values())


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_share_rules(results: dict, raw: dict[str, pd.DataFrame], name: str) -> None:
    result = results[(name, True)]
    rules = MarketRules()
    trades = result.trades
    assert trades["date"].between(pd.Timestamp(START), pd.Timestamp(END)).all()
    held: dict[str, float] = {}
    for row in trades.itertuples(index=False):
        bars = raw[row.code]
        day = bars.loc[row.date]
        change = day["close"] / bars["close"].shift(1).loc[row.date] - 1
        assert day["volume"] > 0, "no trade on a suspended day"
        assert row.price == pytest.approx(day["close"], rel=1e-6), "fills at the close"
        rate = rules.commission + (rules.stamp_duty if row.side == "sell" else 0.0)
        assert row.cost == pytest.approx(max(row.value * rate, rules.min_cost), rel=1e-6)
        if row.side == "buy":
            real_shares = row.shares * day["factor"]  # adjusted shares * factor = shares traded
            assert abs(real_shares / 100 - round(real_shares / 100)) < 1e-3, "lots of 100 real shares"
            assert change < rules.limit_threshold, "no buy at a limit-up close"
            held[row.code] = held.get(row.code, 0.0) + row.shares
        else:
            assert change > -rules.limit_threshold, "no sell at a limit-down close"
            assert row.shares <= held.get(row.code, 0.0) * (1 + 1e-9), "only shares held are sold"
            held[row.code] -= row.shares
    same_day = trades.groupby(["date", "code"])["side"].nunique()
    assert (same_day == 1).all(), "T+1: nothing bought is sold the same day"


@pytest.mark.parametrize(("topk", "n_drop"), [(2, 1), (3, 0), (4, 2), (1, 3)])
def test_multi_factors_replay_trades_as_qlibs_own_topk_dropout_backtest(store: Settings, topk: int, n_drop: int):
    """The same fills and equity as Qlib's backtest, up to the last bits of sums Qlib adds in set order."""
    kwargs = {"settings": store, "topk": topk, "n_drop": n_drop}
    replay = run_backtest("multi_factor", CODES, START, END, engine="replay", **kwargs)
    qlib = run_backtest("multi_factor", CODES, START, END, engine="qlib", **kwargs)
    assert len(qlib.trades) > 0
    pd.testing.assert_frame_equal(replay.trades, qlib.trades, check_exact=False, rtol=1e-12)
    pd.testing.assert_series_equal(replay.equity, qlib.equity, check_exact=False, rtol=1e-12)


def test_a_registered_window_is_loaded_and_another_computed(store: Settings) -> None:
    default = run_backtest("ma_cross", CODES[:3], START, END, settings=store)
    custom = run_backtest("ma_cross", CODES[:3], START, END, settings=store, short=7, long=20)
    custom_computed = run_backtest("ma_cross", CODES[:3], START, END, False, settings=store, short=7, long=20)
    assert "MA5" in default.sources["SH600000"]["from_store"]
    assert "MA7" not in custom.sources["SH600000"]["from_store"] and "MA20" in custom.sources["SH600000"]["from_store"]
    assert custom.metrics == custom_computed.metrics and custom.metrics != default.metrics


def test_buy_and_hold_follows_the_price_path(store: Settings, raw: dict[str, pd.DataFrame]) -> None:
    """Always long in one stock: one buy at the first close after the signal, then shares * close."""
    frames = load_multiple_stocks_with_indicators(["SH600519"], None, END, ["factor"], settings=store)
    always = {"SH600519": pd.Series(True, index=frames["SH600519"].index)}
    cash = 5_000_000.0
    sim = simulate(frames, always, MarketRules(), cash, pd.Timestamp(START), pd.Timestamp(END))
    bars = raw["SH600519"].loc[START:END]
    buy = sim.trades.iloc[0]
    assert len(sim.trades) == 1 and buy.side == "buy" and buy.date == bars.index[0]
    lot_value = 100 * bars["close"].iloc[0] / bars["factor"].iloc[0]
    assert buy.value == pytest.approx(np.floor(cash / (lot_value * 1.0003)) * lot_value, rel=1e-6)
    expected = cash - buy.value - buy.cost + buy.shares * bars["close"]
    np.testing.assert_allclose(sim.equity.to_numpy(), expected.to_numpy(), rtol=1e-6)


def test_orders_wait_for_suspensions_and_limits(store: Settings, raw: dict[str, pd.DataFrame]) -> None:
    """SZ000792: long wanted from 2021-07-01 while suspended; it reopens on 2021-08-10 at +306% (limit
    up, no buy), so the buy fills on 2021-08-11. Flat wanted from 2021-09-15; 2021-09-16 closes -10%
    (limit down, no sell), so the sell fills on 2021-09-17."""
    frames = load_multiple_stocks_with_indicators(["SZ000792"], None, END, ["factor"], settings=store)
    index = frames["SZ000792"].index
    wanted = {"SZ000792": pd.Series((index >= "2021-07-01") & (index < "2021-09-15"), index=index)}
    sim = simulate(frames, wanted, MarketRules(), 1_000_000.0, pd.Timestamp(START), pd.Timestamp(END))
    bars = raw["SZ000792"].loc[:END]
    change = bars["close"] / bars["close"].shift(1) - 1
    buyable = bars.index[(bars["volume"] > 0) & (change < 0.095) & (bars.index > "2021-07-01")]
    sellable = bars.index[(bars["volume"] > 0) & (change > -0.095) & (bars.index > "2021-09-15")]
    assert [buyable[0], sellable[0]] == [pd.Timestamp("2021-08-11"), pd.Timestamp("2021-09-17")]
    assert list(zip(sim.trades["date"], sim.trades["side"], strict=True)) == [
        (buyable[0], "buy"),
        (sellable[0], "sell"),
    ]


def test_backtest_report_for_the_asset(store: Settings) -> None:
    report = backtest_report(store, strategies=("ma_cross", "multi_factor"), years=1)
    assert set(report.metrics) == {"ma_cross", "multi_factor"}
    assert (
        report.metrics["ma_cross"]
        == run_backtest("ma_cross", CODES, report.equity.index[0], report.equity.index[-1], settings=store).metrics
    )
    assert report.equity_png.startswith(b"\x89PNG")


def test_unknown_strategy_and_parameter(store: Settings) -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        run_backtest("momentum", CODES, START, END, settings=store)
    with pytest.raises(TypeError):
        run_backtest("ma_cross", CODES, START, END, settings=store, fast=3)
