"""Tables as a reader sees them: rounded, integers as integers, no empty rows.

A chapter's pandas tables go through :func:`tidy` before they are shown: every cell becomes text
(floats to ``digits`` decimals, large or integral values with thousands separators, tiny values in
scientific notation, missing values as an en dash), and rows with no value at all are dropped.

Example:
    >>> import pandas as pd
    >>> tidy(pd.DataFrame({"a": [852960.0, 0.81234, float("nan")], "b": [1.0, 2e-7, None]})).to_dict("list")
    {'a': ['852,960', '0.812'], 'b': ['1.000', '2.0e-07']}
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["tidy", "cell"]


def cell(value: Any, digits: int = 3) -> str:
    """One value as table text (see the module docstring).

    Example:
        >>> [cell(v) for v in (3, 12.0, 0.5, 1.0, None, float("nan"), "x", True, -0.00001)]
        ['3', '12', '0.500', '1.000', '–', '–', 'x', 'yes', '-1.0e-05']
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        value = value + 0.0  # -0.0 (a rounded tiny negative) reads as 0
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if abs(value) >= 10 and (value.is_integer() or abs(value) >= 10 ** 4):
            return f"{value:,.0f}"
        if value != 0 and abs(value) < 0.5 * 10 ** -digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    try:  # numpy scalars
        return cell(value.item(), digits)
    except AttributeError:
        return str(value)


def tidy(table: Any, digits: int = 3) -> Any:
    """``table`` (a DataFrame or Series) as a DataFrame of text, rows without any value dropped."""
    import pandas as pd

    df = table.to_frame() if isinstance(table, pd.Series) else table
    empty = df.apply(lambda row: all(v is None or (isinstance(v, float) and math.isnan(v)) for v in row), axis=1)
    df = df[~empty]
    return df.astype(object).apply(lambda col: col.map(lambda v: cell(v, digits)))
