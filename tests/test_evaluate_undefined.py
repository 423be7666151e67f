"""`evaluate` on labels that cannot define a figure (a concept with no positive, or no item above a threshold):
null with a reason, valid JSON, no internal error. Fixture safety: benign captions only, each labelled for one
concept at most."""
from __future__ import annotations

import json
import math

import numpy as np

from analyzer.concepts import evaluate_scores
from test_bad_input import cli


class _Model:
    concept_ids = ["minor", "adult_sexual"]
    operating_points = {c: {"screen": {"threshold": 0.3}, "confirm": {"threshold": 0.7}} for c in concept_ids}


def _finite_everywhere(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_everywhere(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_everywhere(v) for v in obj)
    return True


def test_no_positives_gives_null_with_a_reason():
    scores = {"minor": np.array([0.9, 0.1, 0.8, 0.2]), "adult_sexual": np.array([0.1, 0.2, 0.1, 0.05])}
    labels = {"minor": np.array([1, 0, 1, 0]), "adult_sexual": np.array([0, 0, 0, 0])}
    res = evaluate_scores(_Model(), scores, labels, bootstrap=50)
    a = res["adult_sexual"]
    assert a["positives"] == 0 and a["auroc"] is None and "no positive" in a["undefined"]["auroc"]
    for pt in ("screen", "confirm"):
        assert a[pt]["recall"] is None and a[pt]["recall_ci"] is None and a[pt]["f1"] is None
        assert "no positive" in a["undefined"][f"{pt}.recall"]
        assert a[pt]["precision"] is None and "threshold" in a["undefined"][f"{pt}.precision"]
    m = res["minor"]
    assert m["auroc"] == 1.0 and m["undefined"] == {}
    assert m["screen"]["recall"] == 1.0 and m["screen"]["recall_ci"] == [1.0, 1.0]
    json.dumps(res, allow_nan=False)  # raises on NaN
    assert _finite_everywhere(res)


def test_no_positives_but_false_alarms_keeps_precision():
    # no positive, two items over the screen threshold: precision is defined (0), recall is not
    res = evaluate_scores(_Model(), {"minor": np.array([0.5, 0.9, 0.1])}, {"minor": np.array([0, 0, 0])},
                          bootstrap=20)["minor"]
    assert res["screen"]["precision"] == 0.0 and res["screen"]["fp"] == 2
    assert res["screen"]["recall"] is None and "screen.precision" not in res["undefined"]


def test_all_positives_leaves_auroc_undefined():
    res = evaluate_scores(_Model(), {"minor": np.array([0.5, 0.9])}, {"minor": np.array([1, 1])},
                          bootstrap=20)["minor"]
    assert res["auroc"] is None and "no negative" in res["undefined"]["auroc"]
    assert res["screen"]["recall"] == 1.0


def test_cli_evaluate_without_positives(tmp_path, capsys):
    p = tmp_path / "labels.csv"
    p.write_text("text,minor,adult_sexual\nA boy flying a kite,1,0\nA bowl of fruit,0,0\n"
                 "Sunset over the sea,0,0\nA girl reading a book,1,0\n", encoding="utf-8")
    code, out, err = cli(["evaluate", p, "--bootstrap", "20", "--json"], capsys)
    assert code == 0, err
    assert "NaN" not in out
    res = json.loads(out)
    assert res["adult_sexual"]["auroc"] is None and res["adult_sexual"]["undefined"]["auroc"]
    assert res["adult_sexual"]["screen"]["recall"] is None
    assert res["minor"]["positives"] == 2
    code, out, err = cli(["evaluate", p, "--bootstrap", "20"], capsys)
    assert code == 0 and "internal error" not in err, err
    assert "adult_sexual: n=4 positives=0 auroc=n/a" in out
    assert "no positive adult_sexual item" in out
