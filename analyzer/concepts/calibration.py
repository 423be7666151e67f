"""Fusion, calibration and operating points.

- ``fit_fusion``: a small logistic regression over tagger features with sign constraints (scipy L-BFGS-B),
  so the fused probability never decreases when the probe logit or a strong keyword hit increases.
- ``choose_operating_points``: ``screen`` = the highest threshold whose recall is >= 0.99 (the product's target
  is >= 0.98; the extra point is a margin for new captions, because a threshold placed exactly at 0.98 on
  cross-validated predictions of a few hundred positives recalls less on unseen data), ``confirm`` = the
  threshold with the best F1 among those whose precision is >= 0.95; both measured on cross-validated
  predictions and placed halfway (in logit space) to the next lower score so unseen items near the boundary
  are not lost to a threshold sitting exactly on a training score.
"""
from __future__ import annotations

import math

import numpy as np

SCREEN_RECALL = 0.99  # target 0.98 plus a one-point margin for unseen captions (see above)
CONFIRM_PRECISION = 0.95
EPS = 1e-6


def sigmoid(z):
    z = np.clip(np.asarray(z, dtype=np.float64), -40, 40)
    return 1.0 / (1.0 + np.exp(-z))


def logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval for k successes out of n (95% by default)."""
    if n <= 0:
        return [0.0, 1.0]
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [max(0.0, centre - half), min(1.0, centre + half)]


def fit_fusion(F: np.ndarray, y: np.ndarray, nonneg: list[bool], l2: float = 1e-4) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression with optional non-negative coefficients; returns (coef, intercept).

    Projected Newton with an active set and backtracking (a handful of features: exact, fast, deterministic).
    """
    F = np.asarray(F, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, m = F.shape
    X = np.column_stack([F, np.ones(n)])
    reg = np.r_[np.full(m, l2), 0.0]
    bounded = np.r_[np.asarray(nonneg, dtype=bool), False]

    def loss(w):
        z = X @ w
        return float((np.logaddexp(0.0, z) - y * z).sum() / n + 0.5 * (reg * w * w).sum())

    w = np.zeros(m + 1)
    f = loss(w)
    for _ in range(100):
        p = sigmoid(X @ w)
        g = X.T @ (p - y) / n + reg * w
        free = ~(bounded & (w <= 0) & (g > 0))
        Xf = X[:, free]
        H = (Xf.T * (p * (1 - p))) @ Xf / n + np.diag(reg[free]) + 1e-9 * np.eye(int(free.sum()))
        step = np.linalg.solve(H, g[free])
        t = 1.0
        while True:
            w_new = w.copy()
            w_new[free] -= t * step
            w_new[bounded] = np.maximum(w_new[bounded], 0.0)
            f_new = loss(w_new)
            if f_new <= f - 1e-4 * t * float(g[free] @ step) or t < 1e-6:
                break
            t *= 0.5
        done = abs(f - f_new) < 1e-12 or np.max(np.abs(w_new - w)) < 1e-9
        w, f = (w_new, f_new) if f_new <= f else (w, f)
        if done:
            break
    return w[:m], float(w[m])


def fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """1-D logistic calibration p = sigmoid(a z + c), a >= 0."""
    coef, c = fit_fusion(np.asarray(z, dtype=np.float64)[:, None], y, [True], l2=1e-4)
    return float(coef[0]), c


def _counts(p: np.ndarray, y: np.ndarray, t: float) -> tuple[int, int, int, int]:
    pred = p >= t
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    return tp, fp, fn, tn


def point_metrics(p: np.ndarray, y: np.ndarray, t: float) -> dict:
    tp, fp, fn, tn = _counts(p, y, t)
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"threshold": float(t), "precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "tn": tn, "n": int(len(y)), "positives": int((y == 1).sum()),
            "precision_ci": wilson(tp, tp + fp), "recall_ci": wilson(tp, tp + fn)}


def _below(scores_desc: np.ndarray, t: float) -> float:
    """Halfway in logit space between t and the next lower distinct score (or a margin when none)."""
    lower = scores_desc[scores_desc < t]
    lo = logit(lower[0]) if len(lower) else logit(t) - 4.0
    return float(sigmoid(0.5 * (logit(t) + lo)))


def choose_operating_points(p: np.ndarray, y: np.ndarray, *, recall_target: float = SCREEN_RECALL,
                            precision_target: float = CONFIRM_PRECISION, measured_on: str = "") -> dict:
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    npos = int((y == 1).sum())
    cand = np.unique(p)[::-1]  # descending
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    # cumulative counts at each candidate threshold (flag p >= t)
    idx = np.searchsorted(-ps, -cand, side="right")  # number of items with p >= t
    tp = np.cumsum(ys == 1)[idx - 1]
    rec = tp / max(npos, 1)
    prec = tp / np.maximum(idx, 1)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)
    # screen: highest threshold with recall >= target
    ok = np.nonzero(rec >= recall_target)[0]
    t_screen = cand[ok[0]] if len(ok) else cand[-1]
    # confirm: best F1 among thresholds whose precision (and that of every higher threshold with as many
    # positives) meets the target; highest threshold on ties
    okc = np.nonzero(prec >= precision_target)[0]
    if len(okc):
        best = okc[np.argmax(f1[okc])]
        t_confirm, met = cand[best], True
    else:
        best = int(np.argmax(prec))
        t_confirm, met = cand[best], False
    t_screen = _below(cand, t_screen)
    t_confirm = _below(cand, t_confirm)
    t_screen = min(t_screen, t_confirm)
    screen = point_metrics(p, y, t_screen)
    screen.update(target=f"recall>={recall_target}", target_met=bool(screen["recall"] >= recall_target),
                  measured_on=measured_on)
    confirm = point_metrics(p, y, t_confirm)
    confirm.update(target=f"precision>={precision_target}",
                   target_met=bool(met and confirm["precision"] >= precision_target), measured_on=measured_on)
    return {"screen": screen, "confirm": confirm}


def auroc(p: np.ndarray, y: np.ndarray) -> float | None:
    y = np.asarray(y, dtype=int)
    if y.min(initial=0) == y.max(initial=0) or len(np.unique(y)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))

def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """Reliability table, expected calibration error and Brier score of probabilities p against labels y."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            pred, obs = float(p[m].mean()), float(y[m].mean())
            ece += m.sum() / len(p) * abs(pred - obs)
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()), "predicted": pred,
                         "observed": obs})
    return {"ece": float(ece), "brier": float(np.mean((p - y) ** 2)), "bins": rows}
