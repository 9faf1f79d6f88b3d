"""How the dashboard and its terminal mirror write numbers: percentages, milliseconds, dollars
("–" for a missing value)."""

from __future__ import annotations


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, e.g. ``0.123`` -> ``12.3%``."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def ms(value: float | None) -> str:
    """Milliseconds, one decimal below 10 ms."""
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def usd(value: float | None) -> str:
    """US dollars, four decimals below one dollar (a few calls' worth is cents or less)."""
    if value is None:
        return "–"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"
