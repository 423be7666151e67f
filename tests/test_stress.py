"""Model-output stress tests (analyzer/stress/): generated benign generations as SYNTHETIC vectors through a test
encoder and a prototype-weight concept model (tests/media_stubs.py). A generation "carries" a concept only because
its vector was built from that concept's prototype direction here; nothing is content. The prompt ids are those
of the packaged starter suite; no prompt text is written in this file."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzer.cli import main
from analyzer.stress import STARTER_SUITE, load_stress, load_suite, run_stress
from analyzer.stress.stats import newcombe
from media_fixtures import BACKGROUND, colour_png
from media_stubs import COLOUR_B, DIM, PROTO, ColourEncoder, synthetic_concept_model
from test_fixture_safety import _MINOR, _SEXUAL

SAMPLES = 8  # generations per prompt
PLANTED = "benign-en-01"  # a benign prompt whose generations carry the adult_sexual prototype (run A only)


@pytest.fixture()
def stubs(monkeypatch):
    import analyzer.concepts
    import analyzer.encoders

    monkeypatch.setattr(analyzer.encoders, "get_encoder", lambda name=None, **kw: ColourEncoder())
    monkeypatch.setattr(analyzer.concepts, "fit_concept_model",
                        lambda bank, encoder, seed=0, *, modality="text", cache=None: synthetic_concept_model(bank))


def _vector(rng, concept=None) -> list[float]:
    """A background vector with small noise; with ``concept``, that prototype's direction added (synthetic)."""
    v = PROTO["none"] + rng.normal(0, 0.05, DIM).astype(np.float32)
    if concept is not None:
        v = v + 1.3 * PROTO[concept]
    return (v / np.linalg.norm(v)).tolist()


def _generations(path, plant: dict[str, str], *, seed: int) -> str:
    """SAMPLES synthetic generation vectors per starter prompt; ``plant``: prompt id -> concept for all its samples."""
    rng = np.random.default_rng(seed)
    pids, ids, vecs = [], [], []
    for pid in load_suite("builtin:starter").prompt_ids:
        for j in range(SAMPLES):
            pids.append(pid)
            ids.append(f"{pid}/g{j}")
            vecs.append(_vector(rng, plant.get(pid)))
    pq.write_table(pa.table({"gen_id": ids, "prompt_id": pids,
                             "embedding": pa.array(vecs, pa.list_(pa.float32()))}), path)
    return str(path)


def _stress(tmp_path, name, plant, *, seed, **kw):
    gens = _generations(tmp_path / f"{name}.parquet", plant, seed=seed)
    return run_stress("builtin:starter", gens, out=tmp_path / name, id_column="gen_id", embedding_column="embedding",
                      quiet=True, **kw)


def _csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---- the starter suite ------------------------------------------------------------------------------------------

def test_starter_suite_keeps_the_two_concepts_apart_and_covers_several_languages():
    suite = load_suite(STARTER_SUITE)
    assert set(suite.categories()) == {"children", "adult_sexual", "adult", "benign"}
    assert len({lang for lang in suite.lang.values()}) >= 5
    with open(STARTER_SUITE, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        text = r["prompt"]
        assert not (_MINOR.search(text) and _SEXUAL.search(text)), r["prompt_id"]
        if r["category"] != "children":
            assert not _MINOR.search(text), f"{r['prompt_id']}: a minor term outside the children's prompts"
        if r["category"] != "adult_sexual":
            assert not _SEXUAL.search(text), f"{r['prompt_id']}: a sexual term outside the adult-sexual prompts"


def test_a_bad_suite_is_one_input_error(tmp_path, capsys):
    bad = tmp_path / "suite.csv"
    bad.write_text("prompt_id,prompt,category\np1,a lighthouse,landscape\n")
    gens = _generations(tmp_path / "g.parquet", {}, seed=0)
    assert main(["stress", str(bad), gens, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "expected category one of children, adult_sexual" in err
    assert not (tmp_path / "run").exists()


# ---- a planted signal is found, and only there ------------------------------------------------------------------

def test_the_stress_report_flags_exactly_the_planted_prompt(tmp_path, stubs):
    s = _stress(tmp_path, "a", {PLANTED: "adult_sexual"}, seed=1)
    assert s["flagged_prompts"] == [PLANTED]
    row = {r["prompt_id"]: r for r in s["per_prompt"]}[PLANTED]
    assert row["drift_reasons"] == "adult_sexual_on_benign_prompt"
    assert row["adult_sexual_k"] == SAMPLES == row["scored"] and row["adult_sexual_lo"] > 0.6
    cats = {r["category"]: r for r in s["per_category"]}
    assert cats["benign"]["adult_sexual_k"] == SAMPLES and cats["benign"]["drifting_prompts"] == 1
    assert all(cats[c]["adult_sexual_k"] == 0 and cats[c]["minor_k"] == 0 for c in ("children", "adult"))
    run = tmp_path / "a"
    assert (run / "_SUCCESS").exists() and load_stress(run)["flagged_prompts"] == [PLANTED]
    drift = _csv(run / "drift_generations.csv")
    assert {d["prompt_id"] for d in drift} == {PLANTED} and len(drift) == SAMPLES
    assert set(drift[0]) == {"item_id", "prompt_id", "category", "minor_score", "adult_sexual_score", "both",
                             "hash_matched", "escalated", "escalation_reason"}  # ids and scores only
    md = (run / "stress.md").read_text()
    assert PLANTED in md.split("## Prompts whose generations drift")[1].split("## Escalation")[0]
    # a benign prompt drifting to adult_sexual covers one concept only: nothing to escalate
    assert json.loads((run / "escalation" / "manifest.json").read_text())["n_items"] == 0
    assert (run / "figures" / "stress_rates.png").stat().st_size > 1000


def test_generations_whose_prompt_and_tags_cover_both_concepts_go_to_escalation(tmp_path, stubs):
    # SYNTHETIC: the minor prototype planted in the generations of an adult-sexual prompt (vectors only)
    s = _stress(tmp_path, "m", {"adult-sexual-en-02": "minor"}, seed=2)
    assert s["flagged_prompts"] == ["adult-sexual-en-02"]
    assert s["escalation"]["generations"] == SAMPLES
    esc = tmp_path / "m" / "escalation"
    rows = _csv(esc / "quarantine.csv")
    assert {r["item_id"] for r in rows} == {f"adult-sexual-en-02/g{j}" for j in range(SAMPLES)}
    assert {r["category"] for r in rows} == {"r1"} and {r["reasons"] for r in rows} == {"r1:minor_on_adult_sexual_prompt"}
    assert oct(os.stat(esc).st_mode & 0o777) == "0o700"
    gens = pq.read_table(tmp_path / "m" / "generations.parquet")
    assert "text" not in gens.column_names and "url" not in gens.column_names
    assert sum(gens.column("escalated").to_pylist()) == SAMPLES


def test_two_runs_compared_show_the_planted_difference_with_an_interval_excluding_zero(tmp_path, stubs):
    _stress(tmp_path, "b", {}, seed=3, label="checkpoint-b")
    s = _stress(tmp_path, "a", {PLANTED: "adult_sexual"}, seed=4, label="checkpoint-a", compare=tmp_path / "b")
    rows = _csv(tmp_path / "a" / "compare.csv")
    by = {(r["level"], r["key"], r["measure"]): r for r in rows}
    planted = by[("prompt", PLANTED, "adult_sexual")]
    assert planted["excludes_zero"] == "True" and float(planted["diff"]) == 1.0 and float(planted["diff_lo"]) > 0.3
    prompts_excl = {(r["key"], r["measure"]) for r in rows if r["level"] == "prompt" and r["excludes_zero"] == "True"}
    assert prompts_excl == {(PLANTED, "adult_sexual")}
    assert ("prompt", PLANTED, "adult_sexual", 1.0) in {(d["level"], d["key"], d["measure"], d["diff"])
                                                         for d in s["compare"]["differences"]}
    assert (tmp_path / "a" / "figures" / "stress_compare.png").stat().st_size > 1000
    assert "Comparison with `checkpoint-b`" in (tmp_path / "a" / "stress.md").read_text()


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Table II example (h): 56/70 vs 48/80 -> 0.2000, 95% CI 0.0524 to 0.3339
    d, lo, hi = newcombe(56, 70, 48, 80)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)
    assert newcombe(1, 10, 0, 0) is None


# ---- image generations: one folder per prompt id ------------------------------------------------------------------

def test_image_generations_in_prompt_folders_through_the_cli(tmp_path, stubs, capsys):
    suite = tmp_path / "suite.csv"
    suite.write_text("prompt_id,prompt,category\np-lake,a mountain lake,benign\np-fruit,a bowl of fruit,benign\n"
                     "p-car,a vintage car,benign\n")
    gens = tmp_path / "gens"
    for pid in ("p-lake", "p-fruit", "p-car"):
        (gens / pid).mkdir(parents=True)
        for j in range(4):
            # generated colour fields; COLOUR_B maps to the adult_sexual prototype in the test encoder (synthetic)
            colour = COLOUR_B if pid == "p-fruit" else BACKGROUND
            (gens / pid / f"{j}.png").write_bytes(colour_png(colour, j, noise=8, shape=(24, 32)))
    out = tmp_path / "run"
    assert main(["stress", str(suite), str(gens), "--out", str(out), "--encoder", "test", "--media-option",
                 "detector=none", "-q"]) == 0
    assert "prompts drifting: 1" in capsys.readouterr().out
    s = load_stress(out)
    assert s["flagged_prompts"] == ["p-fruit"] and s["generations"]["rows"] == 12
    # the run is refused as --out again without --overwrite, replaced with it
    assert main(["stress", str(suite), str(gens), "--out", str(out), "--encoder", "test", "-q",
                 "--media-option", "detector=none"]) == 2
    assert main(["stress", str(suite), str(gens), "--out", str(out), "--encoder", "test", "-q", "--overwrite",
                 "--media-option", "detector=none"]) == 0


def test_generations_keyed_to_no_prompt_are_refused(tmp_path, stubs, capsys):
    suite = tmp_path / "suite.csv"
    suite.write_text("prompt_id,prompt,category\nq1,a lighthouse,benign\n")
    gens = _generations(tmp_path / "g.parquet", {}, seed=0)  # starter prompt ids: none is q1
    assert main(["stress", str(suite), gens, "--out", str(tmp_path / "run"), "--embedding-column", "embedding",
                 "--id-column", "gen_id", "-q"]) == 2
    err = capsys.readouterr().err
    assert "expected generations keyed by the suite's prompt_id values" in err
    assert not (tmp_path / "run" / "_SUCCESS").exists()


def test_compare_stress_after_the_fact_and_bad_compare_runs(tmp_path, stubs):
    from analyzer.errors import InputError
    from analyzer.stress import compare_stress

    _stress(tmp_path, "a", {PLANTED: "adult_sexual"}, seed=5)
    _stress(tmp_path, "b", {}, seed=6)
    s = compare_stress(tmp_path / "b", tmp_path / "a")  # b minus a: the planted difference is negative
    d = {(x["level"], x["key"], x["measure"]): x for x in s["compare"]["differences"]}
    assert d[("prompt", PLANTED, "adult_sexual")]["diff"] == -1.0 and d[("prompt", PLANTED, "adult_sexual")]["diff_hi"] < 0
    assert load_stress(tmp_path / "b")["compare"]["other_run"] == str((tmp_path / "a").resolve())
    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    with pytest.raises(InputError, match="expected a stress run directory"):
        compare_stress(tmp_path / "b", not_a_run)
    with pytest.raises(InputError, match="another stress run than --out"):
        _stress(tmp_path, "a", {}, seed=7, compare=tmp_path / "a", overwrite=True)
