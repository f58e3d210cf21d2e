"""Monte-Carlo portfolio risk: value at risk, expected shortfall and drawdowns by simulation.

Correlated daily log-returns (one-factor correlation, Cholesky) drive each asset along every
path; the portfolio is rebalanced daily to its weights. Work is done in chunks so that progress
can be reported and a cancel honoured between chunks (``on_progress`` may raise to stop).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from stalwart.core.compute.schemas import PortfolioRisk, PortfolioRiskParams

#: floats simulated per chunk: bounds memory (~8 MB) and the time between progress reports
CHUNK_FLOATS = 1_000_000


def simulate_portfolio(
    params: PortfolioRiskParams, on_progress: Callable[[float, str], None] | None = None
) -> PortfolioRisk:
    """Simulate ``params.paths`` paths; ``on_progress(pct, message)`` after every chunk."""
    rng = np.random.default_rng(params.seed)
    n, days = params.assets, params.horizon_days
    weights = np.array(params.weights or [1.0 / n] * n)
    corr = np.full((n, n), params.correlation) + np.eye(n) * (1.0 - params.correlation)
    chol = np.linalg.cholesky(corr)
    daily_vol = params.annual_volatility / math.sqrt(252)
    daily_drift = params.annual_return / 252 - 0.5 * daily_vol**2

    chunk = max(1, CHUNK_FLOATS // (days * n))
    finals = np.empty(params.paths)
    drawdowns = np.empty(params.paths)
    done = 0
    while done < params.paths:
        size = min(chunk, params.paths - done)
        shocks = rng.standard_normal((size, days, n)) @ chol.T
        asset_growth = np.exp(daily_drift + daily_vol * shocks)  # per day, per asset
        portfolio_growth = asset_growth @ weights  # rebalanced daily
        values = params.initial_value * np.cumprod(portfolio_growth, axis=1)
        peaks = np.maximum.accumulate(np.maximum(values, params.initial_value), axis=1)
        finals[done : done + size] = values[:, -1]
        drawdowns[done : done + size] = ((peaks - values) / peaks).max(axis=1)
        done += size
        if on_progress is not None:
            on_progress(100.0 * done / params.paths, f"{done:,} of {params.paths:,} paths")

    losses = params.initial_value - finals
    var = float(np.quantile(losses, params.confidence))
    tail = losses[losses >= var]
    return PortfolioRisk(
        paths=params.paths,
        horizon_days=days,
        confidence=params.confidence,
        mean_value=float(finals.mean()),
        value_at_risk=var,
        expected_shortfall=float(tail.mean()) if tail.size else var,
        probability_of_loss=float((losses > 0).mean()),
        worst_drawdown_p95=float(np.quantile(drawdowns, 0.95)),
    )
