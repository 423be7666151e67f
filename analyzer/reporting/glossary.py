"""The report's plain-language glossary ("How to read this report"): the verdicts, the dataset state, the two
concepts, screen and confirm, R1 to R4, assessed / not assessed and the escalation package."""
from __future__ import annotations

GLOSSARY = [
    ("PASS / FAIL / INCONCLUSIVE", "PASS: every gate of the policy held for the named dataset state. FAIL: at least "
     "one gate did not. INCONCLUSIVE: the analyzer could not tell (too little assessed, uncalibrated thresholds, or "
     "too little data for a gate to mean anything); treat it as not cleared."),
    ("Dataset state", "What the verdict is about: the dataset \"as scanned\", or \"after applying strategy S\", which "
     "holds only once `analyzer apply` has written the cleaned dataset and a sign-off has checked it."),
    ("minor / adult_sexual", "The two concepts the analyzer looks for: items that depict children, and items with "
     "adult sexual content. Each is tagged separately; the risk is where they meet."),
    ("Screen / confirm", "Two thresholds per concept. Screen is set to catch almost every true item (high recall, "
     "more false alarms); confirm is set so that most items above it are true (high precision). Risk rules use "
     "screen, so that little is missed."),
    ("R1 (item)", "One item carries both concepts at the screen threshold, or matches a known-abuse hash list. These "
     "items are quarantined, listed by id only, never shown, and go into the escalation package."),
    ("R2 (neighbourhood)", "An item whose nearest neighbours in embedding space carry the other concept (a "
     "\"bridge\"): "
     "a model trained on both may learn to combine them even if no single item does."),
    ("R3 (group)", "A source (web domain), shard or embedding cluster that holds both concepts, ranked by how many "
     "co-occurring items it holds, with 95% intervals."),
    ("R4 (dataset)", "One exposure index for the whole dataset, from the R1 share, the group co-occurrence and the "
     "bridge share (docs/risk-model.md gives the formula)."),
    ("Assessed / not assessed", "An item is assessed when the analyzer could look at it with measured accuracy. Items "
     "that failed to read, have no caption and no embedding, are in an unsupported media type or a language without "
     "measured support, or whose modality is not calibrated, are counted as not assessed, never as clean."),
    ("Escalation package", "`RUN/escalation/`: the ids, hashes and source references of R1 and hash-matched items, for "
     "the organisation you report to. It holds no images, captions or URLs."),
]


def glossary_section() -> str:
    return "\n".join(["## How to read this report", ""] + [f"- **{term}**: {text}" for term, text in GLOSSARY])
