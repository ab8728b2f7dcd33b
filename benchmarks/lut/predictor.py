"""Whole-model latency from the units and the whole graph: the predictor's forms, their fit and the choice.

Every form starts from ``units_ms`` (the sum of the table's unit times, each bag rescaled by its reference
unit) and corrects what the units cannot see (graph.py: kernels after fusion, layout reorders, activation
bytes):

    sum        intercept + scale * units_ms
    sum+nodes  ... + per_node * (nodes of the units)                 the segfactory.lut/1 overhead
    kernels    ... + ridge-regularised linear terms per kernel class (after fusion), activation MB and the
               nodes fusion removed across units (unit nodes - graph nodes)
    ratio      log(ms) = a + b * log(units_ms) + ridge terms as above (a multiplicative correction)
    stumps     the sum form times exp(boosted regression stumps on the same features): a small
               gradient-boosted model in numpy

:func:`choose_and_fit` fits each candidate (form, regularisation) on the fitting genotypes, scores it on the
selection genotypes (share within +-10%, then MAPE), and refits the winner on both sets. Evaluation
genotypes are never seen here: callers check their keys against :func:`fitted_keys`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from segfactory.factory.errors import InputError

FORMS = ("sum", "sum+nodes", "kernels", "ratio", "stumps")
GRAPH_FORMS = ("kernels", "ratio", "stumps")
# (form, hyper-parameter): ridge strength on standardised features, or boosting rounds
CANDIDATES: tuple[tuple[str, float], ...] = (
    ("sum", 0.0), ("sum+nodes", 0.0),
    ("kernels", 0.3), ("kernels", 3.0), ("kernels", 30.0),
    ("ratio", 0.3), ("ratio", 3.0), ("ratio", 30.0),
    ("stumps", 10), ("stumps", 40),
)
STUMP_RATE = 0.3


def graph_columns(row: dict[str, float]) -> list[str]:
    """The correction features of a row: kernel counts, activation MB, nodes fused away across units."""
    return sorted(k for k in row if k.startswith("k_")) + ["act_mb", "fused"]


def with_fused(row: dict[str, float]) -> dict[str, float]:
    out = dict(row)
    if "nodes" in out:
        out["fused"] = out.get("unit_nodes", 0.0) - out["nodes"]
    return out


def _matrix(rows: Sequence[dict[str, float]], columns: Sequence[str]):
    import numpy as np

    return np.array([[float(r.get(c, 0.0)) for c in columns] for r in rows], dtype=float)


def _standardise(X, center=None, scale=None):
    if center is None:
        center = X.mean(axis=0)
        scale = X.std(axis=0)
    keep = scale > 1e-12
    return (X[:, keep] - center[keep]) / scale[keep], center, scale, keep


def _ridge(A, y, penalised: int, lam: float):
    """Least squares on ``A`` with an L2 penalty ``lam`` on its last ``penalised`` columns."""
    import numpy as np

    d = np.zeros(A.shape[1])
    if penalised:
        d[-penalised:] = lam
    return np.linalg.solve(A.T @ A + np.diag(d) + 1e-9 * np.eye(A.shape[1]), A.T @ y)


def _base(rows, nodes: bool):
    import numpy as np

    cols = [np.ones(len(rows)), [r["units_ms"] for r in rows]]
    if nodes:
        cols.append([r.get("unit_nodes", 0.0) for r in rows])
    return np.column_stack(cols)


def _stumps_fit(Z, residual, rounds: int) -> list[list[float]]:
    """Boosted regression stumps on ``Z`` (standardised features): [feature, threshold, left, right] each."""
    import numpy as np

    r = residual.copy()
    stumps = []
    for _ in range(int(rounds)):
        best = None
        for j in range(Z.shape[1]):
            values = np.unique(Z[:, j])
            for t in (values[:-1] + values[1:]) / 2:
                left = Z[:, j] <= t
                lv, rv = r[left].mean(), r[~left].mean()
                sse = ((r[left] - lv) ** 2).sum() + ((r[~left] - rv) ** 2).sum()
                if best is None or sse < best[0]:
                    best = (sse, j, float(t), float(lv), float(rv))
        if best is None:
            break
        _, j, t, lv, rv = best
        stumps.append([j, t, STUMP_RATE * lv, STUMP_RATE * rv])
        r = r - np.where(Z[:, j] <= t, STUMP_RATE * lv, STUMP_RATE * rv)
    return stumps


def _stumps_apply(Z, stumps) -> Any:
    import numpy as np

    out = np.zeros(Z.shape[0])
    for j, t, lv, rv in stumps:
        out += np.where(Z[:, int(j)] <= t, lv, rv)
    return out


def min_samples(form: str) -> int:
    """Genotypes a form needs to be fitted at all (the ridge keeps the graph forms stable below p)."""
    return {"sum": 2, "sum+nodes": 4}.get(form, 6)


def fit_form(form: str, hyper: float, rows: Sequence[dict[str, float]], y: Sequence[float]) -> dict[str, Any]:
    """Fit one form on ``rows`` (feature dicts, see :func:`feature_row`) against measured ``y`` (ms)."""
    import numpy as np

    if form not in FORMS:
        raise InputError(f"predictor form {form!r} is not one of {', '.join(FORMS)}")
    rows = [with_fused(r) for r in rows]
    y = np.asarray(y, dtype=float)
    model: dict[str, Any] = {"form": form, "hyper": hyper}
    if form in ("sum", "sum+nodes"):
        model["coef"] = np.linalg.lstsq(_base(rows, form == "sum+nodes"), y, rcond=None)[0].tolist()
        return model
    columns = graph_columns(rows[0])
    Z, center, scale, _ = _standardise(_matrix(rows, columns))
    model.update(columns=columns, center=center.tolist(), scale=scale.tolist())
    if form == "kernels":
        A = np.column_stack([_base(rows, False), Z])
        model["coef"] = _ridge(A, y, Z.shape[1], hyper * len(rows)).tolist()
    elif form == "ratio":
        A = np.column_stack([np.ones(len(rows)), np.log([max(r["units_ms"], 1e-9) for r in rows]), Z])
        model["coef"] = _ridge(A, np.log(y), Z.shape[1], hyper * len(rows)).tolist()
    else:  # stumps on the log residual of the sum form
        base = np.linalg.lstsq(_base(rows, False), y, rcond=None)[0]
        pred = _base(rows, False) @ base
        model["coef"] = base.tolist()
        model["stumps"] = _stumps_fit(Z, np.log(y / np.maximum(pred, 1e-9)), int(hyper))
    return model


def apply(model: dict[str, Any], rows: Sequence[dict[str, float]]) -> list[float]:
    """Predicted ms of each row under a fitted ``model``."""
    import numpy as np

    rows = [with_fused(r) for r in rows]
    form, coef = model["form"], np.asarray(model["coef"], dtype=float)
    if form in ("sum", "sum+nodes"):
        return (_base(rows, form == "sum+nodes") @ coef).tolist()
    center, scale = np.asarray(model["center"]), np.asarray(model["scale"])
    Z = _standardise(_matrix(rows, model["columns"]), center, scale)[0]
    if form == "kernels":
        return (np.column_stack([_base(rows, False), Z]) @ coef).tolist()
    if form == "ratio":
        A = np.column_stack([np.ones(len(rows)), np.log([max(r["units_ms"], 1e-9) for r in rows]), Z])
        return np.exp(A @ coef).tolist()
    return ((_base(rows, False) @ coef) * np.exp(_stumps_apply(Z, model.get("stumps", [])))).tolist()


def scores(measured: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    from segfactory.benchmarks import stats

    out = {"n": len(measured), "within_10pct": stats.share_within(measured, predicted, 0.10),
           "mape": stats.mape(measured, predicted)}
    if len(measured) >= 2:
        out["kendall_tau"] = stats.kendall_tau(measured, predicted)
    return out


def choose_and_fit(fit_rows: Sequence[dict[str, float]], fit_y: Sequence[float],
                   sel_rows: Sequence[dict[str, float]], sel_y: Sequence[float]) -> dict[str, Any]:
    """The candidate that predicts the selection set best, refitted on fitting + selection sets.

    Candidates the fitting set is too small for (:func:`min_samples`) are skipped; with no selection
    set the table's old form (sum+nodes, or sum under 4 genotypes) is kept.
    """
    n = len(fit_rows)
    if n < 2:
        raise InputError("fitting the latency predictor needs at least two measured genotypes")
    n_cols = len(graph_columns(with_fused(fit_rows[0]))) if fit_rows and "nodes" in fit_rows[0] else 0
    tried = []
    if sel_rows:
        for form, hyper in CANDIDATES:
            if form in GRAPH_FORMS and not n_cols:
                continue
            if n < min_samples(form):
                continue
            model = fit_form(form, hyper, fit_rows, fit_y)
            pred = apply(model, sel_rows)
            if not all(math.isfinite(p) and p > 0 for p in pred):
                continue
            tried.append({"form": form, "hyper": hyper, **scores(sel_y, pred)})
    if tried:
        best = max(tried, key=lambda t: (t["within_10pct"], -t["mape"]))
        form, hyper = best["form"], best["hyper"]
    else:
        form, hyper = ("sum+nodes" if n >= 4 else "sum"), 0.0
    model = fit_form(form, hyper, list(fit_rows) + list(sel_rows), list(fit_y) + list(sel_y))
    model["selection"] = tried
    return model


def validate(model: Any, where: str) -> None:
    """Raise :class:`InputError` (one line naming ``where``) unless ``model`` is a usable fitted predictor."""
    def numbers(xs: Any) -> bool:
        return isinstance(xs, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                            and math.isfinite(x) for x in xs)

    fix = f"refit it with segfactory profile --out {where.split()[-1]}"
    if not isinstance(model, dict) or model.get("form") not in FORMS or not numbers(model.get("coef")):
        raise InputError(f"{where}: field 'predictor' is not a fitted predictor (form and finite coef); {fix}")
    if model["form"] in GRAPH_FORMS:
        cols = model.get("columns")
        if not (isinstance(cols, list) and all(isinstance(c, str) for c in cols) and numbers(model.get("center"))
                and numbers(model.get("scale")) and len(model["center"]) == len(cols) == len(model["scale"])):
            raise InputError(f"{where}: field 'predictor' has inconsistent columns/center/scale; {fix}")
    if model["form"] == "stumps" and not (isinstance(model.get("stumps"), list)
                                          and all(numbers(s) and len(s) == 4 for s in model["stumps"])):
        raise InputError(f"{where}: field 'predictor' has malformed stumps; {fix}")
