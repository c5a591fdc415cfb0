"""A population ranked by several scores at once: a rank aggregation.

Each member score ranks the population (higher is better); r(a), the rank of
a among the n divided by n, is in (0, 1]; tied values share their average
rank; a NaN ranks below every number (the NaNs tied at the bottom). The
aggregate of a is

    log:   sum over members of log r(a)   (AZ-NAS's form: a low rank on any member costs much)
    mean:  sum over members of r(a)       (Borda: a low rank on one member can be made up)

a member listed twice counting twice (of_members).

docs/proxies.md lists the candidates measured and names the frozen one (FORM).
Ranks are relative to the population: the same model can get another
aggregate in another population.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

FORMS = ("log", "mean")
FORM = "log"  # the form --rank-by uses
# the frozen aggregate (docs/proxies.md, candidate 11): chosen on NAS-Bench-201 CIFAR-10 only, then measured
# unchanged on every held-out set: --rank-by meco,meco,naswot,params
FROZEN_MEMBERS = ("meco", "meco", "naswot", "params")


def rank_fractions(values: Sequence[float]) -> np.ndarray:
    """r(a) for each value: average rank (1 = lowest) over n, NaN lowest."""
    key = np.asarray(values, dtype=np.float64)
    n = len(key)
    if n == 0:
        return np.zeros(0)
    key = np.where(np.isnan(key), -np.inf, key)
    order = np.argsort(key, kind="stable")
    _, first, counts = np.unique(key[order], return_index=True, return_counts=True)
    ranks = np.empty(n)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks / n


def aggregate(columns: Mapping[str, Sequence[float]], form: str = FORM,
              weights: Mapping[str, float] | None = None) -> np.ndarray:
    """The aggregate score of each member of a population; `columns` maps each
    member score's name to its values, one per candidate, in the same order;
    `weights` (default 1 each) multiplies a member's term (a member counted twice: 2)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, not {form!r}")
    if not columns:
        raise ValueError("no score to aggregate")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ValueError("every score needs one value per candidate")
    weights = weights or {}
    terms = [weights.get(name, 1.0) * (np.log(rank_fractions(values)) if form == "log" else rank_fractions(values))
             for name, values in columns.items()]
    return np.sum(terms, axis=0)


def of_members(columns: Mapping[str, Sequence[float]], members: Sequence[str], form: str = FORM) -> np.ndarray:
    """aggregate() of `members`, names of `columns`, a name listed k times weighing k
    (--rank-by meco,meco,naswot,params: MeCo's term counts twice)."""
    counts = Counter(members)
    return aggregate({name: columns[name] for name in counts}, form, weights=counts)
