"""Job functions of the reference app: the expensive computations, run as background jobs."""

from __future__ import annotations

from typing import Any

from stalwart.core.compute.risk import simulate_portfolio
from stalwart.core.compute.schemas import PortfolioRiskParams
from stalwart.core.jobs import Reporter, job_function


@job_function(args=PortfolioRiskParams)
def portfolio_risk(params: PortfolioRiskParams, reporter: Reporter) -> dict[str, Any]:
    """Monte-Carlo value at risk of a portfolio; reports progress per chunk, stops on cancel."""
    reporter.report(0, "Simulating…")
    risk = simulate_portfolio(params, reporter.report)
    reporter.report(100, "Done")
    return risk.model_dump(mode="json")
