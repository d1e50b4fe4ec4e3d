"""Choosing the number of clusters (HUDD step 3): the knee of the WICD curve's gradient.

docs/design.md#knee: take the 4th-order finite-difference gradient of the
WICD curve over k and the knee of that gradient with kneed (``curve="concave"``,
``direction="increasing"``). When kneed finds no knee (a flat or straight gradient), the
fallback is the k with the highest silhouette, and a warning says so.

Example:
    >>> import numpy as np
    >>> ks = np.arange(2, 30)
    >>> wicd = 1.0 / ks  # steep, then flat: the gradient rises and levels off
    >>> choose_k(ks, wicd, np.zeros(len(ks))).k
    7
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

SELECTIONS = ("wicd-knee", "silhouette")


def gradient4(y: np.ndarray, spacing: float = 1.0) -> np.ndarray:
    """The published toolset's ``gradientO4``: the 5-point central difference
    ``(y[i-2] − 8y[i-1] + 8y[i+1] − y[i+2]) / 12`` inside and plain first differences
    at the two ends (``out[0:2] = y[1:3] − y[0:2]``, ``out[-2:] = y[-2:] − y[-3:-1]``),
    divided by ``spacing``. The toolset passes a spacing of 4; kneed rescales the curve
    to [0, 1], so the spacing never moves the knee.

    Example:
        >>> gradient4(np.arange(6.0) ** 3).round(6).tolist()
        [1.0, 7.0, 12.0, 27.0, 37.0, 61.0]
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    g = np.zeros(n)
    if n < 2:
        return g
    g[2:-2] = (y[:-4] - 8 * y[1:-3] + 8 * y[3:-1] - y[4:]) / 12
    # the toolset's slices as written (for 2 points NumPy broadcasts them: [0, y1 − y0])
    g[:2] = y[1:3] - y[:2]
    g[-2:] = y[-2:] - y[-3:-1]
    return g / spacing


def knee_of(ks: np.ndarray, values: np.ndarray) -> int | None:
    """kneed's knee (concave, increasing) of ``values`` over ``ks``, or None."""
    from kneed import KneeLocator

    values = np.asarray(values, dtype=np.float64)
    scale = float(np.abs(values).max()) if len(values) else 0.0
    if len(ks) < 3 or np.ptp(values) <= 1e-12 * scale:  # flat up to rounding: no knee
        return None
    with warnings.catch_warnings():  # kneed warns when it finds nothing; we log instead
        warnings.simplefilter("ignore")
        knee = KneeLocator(ks, values, curve="concave", direction="increasing").knee
    return None if knee is None else int(knee)


@dataclass
class Choice:
    """The chosen k and how it was chosen (``wicd-knee``, ``silhouette``,
    ``fallback-silhouette`` when the knee was asked for but kneed found none, or
    ``single-k`` when the range holds one k)."""

    k: int
    method: str
    gradient: np.ndarray


def choose_k(
    ks: np.ndarray,
    wicd: np.ndarray,
    silhouette: np.ndarray,
    selection: str = "wicd-knee",
    name: str = "",
) -> Choice:
    """The number of clusters by ``selection``: ``"wicd-knee"`` (the reference rule) or
    ``"silhouette"`` (highest mean silhouette, smallest k on ties)."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    grad = gradient4(wicd)
    best_sil = int(ks[int(np.argmax(silhouette))])
    if selection == "silhouette":
        return Choice(best_sil, "silhouette", grad)
    if len(ks) == 1:  # nothing to choose (N < 6 with the default range)
        return Choice(int(ks[0]), "single-k", grad)
    knee = knee_of(ks, grad)
    if knee is not None:
        return Choice(knee, "wicd-knee", grad)
    msg = f"{name or 'layer'}: kneed found no knee in the WICD gradient; using the k with the highest silhouette ({best_sil})"  # noqa: E501
    warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return Choice(best_sil, "fallback-silhouette", grad)


def best_layer(scores: dict[str, tuple[float, float]], selection: str = "wicd-knee") -> str:
    """The best layer from ``{layer: (wicd_at_k, silhouette_at_k)}``: lowest WICD at its
    chosen k (the reference rule), or highest silhouette with ``selection="silhouette"``;
    ties go to the first layer given. ``input`` is never chosen.

    Example:
        >>> best_layer({"input": (0.1, 0.9), "conv1": (0.5, 0.2), "fc": (0.3, 0.1)})
        'fc'
    """
    names = [n for n in scores if n != "input"]
    if not names:
        raise ValueError("no layer to choose from besides 'input' (it is never the best layer)")
    if selection == "silhouette":
        return max(names, key=lambda n: scores[n][1])
    return min(names, key=lambda n: scores[n][0])
