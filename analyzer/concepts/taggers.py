"""Embedding taggers as scikit-learn estimators.

- :class:`ProbeTagger`: logistic regression on labelled embeddings (an analyst's labels or the project's
  training captions). Passes scikit-learn's ``check_estimator``.
- :class:`PromptTagger`: positive and negative prompt prototypes. Linear on purpose: the decision is
  ``X @ (mean(pos) - mean(neg))`` plus an offset, so a bank of concepts scores as one matrix product.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data


class ProbeTagger(ClassifierMixin, BaseEstimator):
    """Logistic-regression probe on embeddings.

    Parameters
    ----------
    C : inverse L2 regularisation strength.
    class_weight : "balanced" (default: positives are often rare) or None or a dict.
    max_iter : solver iterations.
    random_state : seed (the lbfgs solver is deterministic; kept for API symmetry and other solvers).

    Learned attributes: ``classes_``, ``coef_`` (n_classes or 1, n_features), ``intercept_``, ``n_iter_``,
    ``n_features_in_``.
    """

    def __init__(self, C: float = 4.0, class_weight="balanced", max_iter: int = 2000, random_state: int = 0):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y, sample_weight=None):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = unique_labels(y)
        lr = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter,
                                random_state=self.random_state)
        lr.fit(X, y, sample_weight=sample_weight)
        self.coef_ = lr.coef_
        self.intercept_ = lr.intercept_
        self.n_iter_ = lr.n_iter_
        self.estimator_ = lr
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.decision_function(X)

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.estimator_.predict(X)


class PromptTagger(ClassifierMixin, BaseEstimator):
    """Prompt-prototype tagger: nearest-centroid direction between positive and negative prompt embeddings.

    ``fit(X, y)``: X are prompt embeddings, y 1 for positive prompts and 0 for negative prompts.
    decision = X @ coef_ + intercept_, with coef_ = mean(pos) - mean(neg) and the intercept at the midpoint
    of the two centroids; ``predict_proba`` applies a logistic with slope ``scale`` (cosine similarities are
    small numbers, so the default slope is steep). Learned: ``classes_``, ``coef_``, ``intercept_``.
    """

    def __init__(self, scale: float = 20.0):
        self.scale = scale

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_ = unique_labels(y)
        if len(self.classes_) != 2:
            raise ValueError(f"PromptTagger needs exactly two classes (positive and negative prompts), "
                             f"got {len(self.classes_)}")
        pos = X[y == self.classes_[1]].mean(axis=0)
        neg = X[y == self.classes_[0]].mean(axis=0)
        self.coef_ = (pos - neg)[None, :]
        self.intercept_ = np.array([-0.5 * (pos @ pos - neg @ neg)])
        return self

    def decision_function(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X):
        z = np.clip(self.scale * self.decision_function(X), -50, 50)
        p = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return self.classes_[(self.decision_function(X) > 0).astype(int)]
