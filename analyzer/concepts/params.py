"""The scikit-learn estimator parameter protocol (``get_params`` / ``set_params``) without importing scikit-learn.

``KeywordTagger`` and ``ConceptModel`` are loaded by every scan, which never imports scikit-learn (its import
costs about 2 s here); this mixin gives them what ``sklearn.base.clone`` and ``sklearn.base.BaseEstimator`` rely
on: the constructor's arguments are the parameters, stored unchanged under their own names by ``__init__``.
"""
from __future__ import annotations

import inspect


class ParamsMixin:
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict:
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        valid = self._get_param_names()
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"expected a parameter of {type(self).__name__} among {valid}, got {name!r}")
            if sub:
                getattr(self, name).set_params(**{sub: value})
            else:
                setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        shown = []
        for name in self._get_param_names():
            value, default = getattr(self, name), sig.parameters[name].default
            if value is not default and not (isinstance(value, (int, float, str)) and value == default):
                shown.append(f"{name}={_short(value)}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"<{type(value).__name__}>"


class NotFittedError(ValueError, AttributeError):
    """A method that needs learned state was called before ``fit`` (as ``sklearn.exceptions.NotFittedError``)."""
