"""Validated parameters of the computations (pydantic; nothing of ours imported)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PortfolioRiskParams(BaseModel):
    """A portfolio of correlated assets, simulated over a horizon for its value at risk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    assets: int = Field(default=8, ge=1, le=50, description="number of assets")
    #: weights per asset (summing to 1); equal weights when empty
    weights: tuple[float, ...] = ()
    annual_return: float = Field(default=0.06, ge=-1.0, le=2.0)
    annual_volatility: float = Field(default=0.2, gt=0.0, le=3.0)
    correlation: float = Field(default=0.3, ge=0.0, lt=1.0)
    horizon_days: int = Field(default=63, ge=1, le=756)
    paths: int = Field(default=500_000, ge=1_000, le=5_000_000)
    confidence: float = Field(default=0.99, ge=0.5, le=0.9999)
    initial_value: float = Field(default=1_000_000.0, gt=0.0)
    seed: int = Field(default=7, ge=0)

    @model_validator(mode="after")
    def _weights_fit(self) -> PortfolioRiskParams:
        if self.weights:
            if len(self.weights) != self.assets:
                raise ValueError(f"weights: {len(self.weights)} given for {self.assets} assets")
            if any(w < 0 for w in self.weights) or abs(sum(self.weights) - 1.0) > 1e-6:
                raise ValueError("weights: must be non-negative and sum to 1")
        return self


class PortfolioRisk(BaseModel):
    """What the simulation found (money in the portfolio's currency, losses positive)."""

    model_config = ConfigDict(frozen=True)

    paths: int
    horizon_days: int
    confidence: float
    mean_value: float
    value_at_risk: float
    expected_shortfall: float
    probability_of_loss: float
    worst_drawdown_p95: float
