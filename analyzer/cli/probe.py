"""`analyzer probe fit LABELS.csv --concept ID --out BANK.yaml`: add an analyst's labelled examples to a bank.

With ``--modality image|video|audio`` it calibrates that modality instead, from a table of labelled items (embeddings
or files, a 0/1 column per concept): analyzer/cli/probe_media.py.

The written bank is the base bank (``--bank`` or the packaged default) plus a ``probes:`` entry holding the
labelled examples as plain YAML ({text, label} pairs, the labels file's sha256 and name). No weights and no
pickle: ``fit_concept_model`` re-fits the probe from the examples for whichever encoder a scan uses, so the
same bank works with every encoder. A concept id that the base bank lacks becomes a new context concept.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
from pathlib import Path

import yaml

from analyzer.encoders import DEFAULT_ENCODER
from analyzer.errors import InputError


def register(subparsers) -> None:
    p = subparsers.add_parser("probe", help="fit a probe from labelled examples and write a bank that embeds them",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="probe_command", metavar="{fit}")
    sub.required = True
    f = sub.add_parser("fit", help="fit a probe from labelled captions (one concept) or labelled images, videos or "
                                   "audio (--modality) and write BANK.yaml")
    f.add_argument("labels", help="captions: CSV with a text column and a 0/1 label column; --modality image|video|"
                                  "audio: a CSV/TSV/parquet/JSONL table with item_id, path or embedding, and a 0/1 "
                                  "column per concept")
    f.add_argument("--concept", action="append", help="concept id (captions: exactly one, an existing one such as "
                                                      "minor or a new one; media: repeatable, default every column "
                                                      "named after a concept of the bank)")
    f.add_argument("--modality", choices=("text", "image", "video", "audio"), default="text",
                   help="what the labelled examples are (default: text captions)")
    f.add_argument("--id-column", help="media: item id column (default: item_id, id or key)")
    f.add_argument("--path-column", help="media: file path column, relative to the table (default: path, file or "
                                         "file_name)")
    f.add_argument("--embedding-column", help="media: precomputed embedding column (default: embedding when present)")
    f.add_argument("--detector", choices=("nudenet", "none"), default="nudenet",
                   help="media (image files): the image detector whose score is fitted with the probe")
    f.add_argument("--out", required=True, help="bank YAML to write")
    f.add_argument("--text-column", default="text", help="text column (default: text)")
    f.add_argument("--label-column", help="0/1 label column (default: the concept id)")
    f.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help=f"encoder used to measure the probe (default: {DEFAULT_ENCODER})")
    f.add_argument("--bank", help="base bank YAML (default: the packaged bank)")
    f.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def read_labels(path: str | Path, text_column: str, label_column: str) -> tuple[list[str], list[int], bytes]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"expected a labelled CSV file, got {str(path)!r} which does not exist")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"expected a UTF-8 CSV, got undecodable bytes in {p}; save it as UTF-8") from None
    reader = csv.DictReader(text.splitlines())
    cols = reader.fieldnames or []
    if text_column not in cols:
        raise InputError(f"expected a text column {text_column!r} in {p}, got {cols}; use --text-column")
    if label_column not in cols:
        raise InputError(f"expected a 0/1 label column {label_column!r} in {p}, got {cols}; use --label-column")
    texts, labels = [], []
    for i, row in enumerate(reader, start=2):
        t, v = (row.get(text_column) or "").strip(), (row.get(label_column) or "").strip()
        if not t:
            continue
        if v not in ("0", "1"):
            raise InputError(f"expected 0 or 1 in column {label_column!r} of {p} line {i}, got {v!r}")
        texts.append(t)
        labels.append(int(v))
    pos = sum(labels)
    if pos < 2 or len(labels) - pos < 2:
        raise InputError(f"expected at least 2 positive and 2 negative examples in {p}, got {pos} positive and "
                         f"{len(labels) - pos} negative; label more examples")
    return texts, labels, data


def build_bank_yaml(base_raw: dict, concept: str, texts: list[str], labels: list[int], *, source: str,
                    sha256: str, text_column: str, label_column: str) -> str:
    raw = dict(base_raw)
    concepts = [dict(c) for c in raw.get("concepts", [])]
    if concept not in [c.get("id") for c in concepts]:
        concepts.append({"id": concept, "role": "context", "severity": "info",
                         "description": f"Concept defined by labelled examples from {source} (analyzer probe fit).",
                         "positive_prompts": [], "negative_prompts": [], "keywords": {}})
    raw["concepts"] = concepts
    probes = [p for p in (raw.get("probes") or []) if not (p.get("concept") == concept and p.get("source") == source)]
    probes.append({"concept": concept, "source": source, "source_sha256": sha256, "text_column": text_column,
                   "label_column": label_column, "written_by": "analyzer probe fit",
                   "examples": [{"text": t, "label": int(y)} for t, y in zip(texts, labels)]})
    raw["probes"] = probes
    header = ("# Concept bank written by `analyzer probe fit`: the base bank plus labelled probe examples.\n"
              "# Plain YAML data (no code, no pickled weights); see docs/concepts.md.\n")
    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120)


def run(args) -> int:
    from analyzer.concepts import fit_concept_model, load_bank, parse_bank
    from analyzer.encoders import get_encoder

    if args.probe_command != "fit":  # pragma: no cover - argparse enforces the choice
        raise InputError(f"expected `analyzer probe fit`, got {args.probe_command!r}")
    if args.modality != "text":
        from analyzer.cli.probe_media import run_media

        return run_media(args)
    if not args.concept or len(args.concept) != 1:
        raise InputError(f"expected one --concept for labelled captions, got {len(args.concept or [])}; fit one "
                         "concept at a time (or pass --modality image|video|audio for labelled media)")
    args.concept = args.concept[0]
    if not re.match(r"^[a-z][a-z0-9_]{0,62}$", args.concept):
        raise InputError(f"expected --concept as a snake_case id (a-z, 0-9, _), got {args.concept!r}")
    base = load_bank(args.bank)
    texts, labels, data = read_labels(args.labels, args.text_column, args.label_column or args.concept)
    out = Path(args.out)
    if not out.parent.exists():
        raise InputError(f"expected --out in an existing directory, got {str(out)!r}; create {out.parent} first")
    doc = build_bank_yaml(base.raw, args.concept, texts, labels, source=Path(args.labels).name,
                          sha256=hashlib.sha256(data).hexdigest(), text_column=args.text_column,
                          label_column=args.label_column or args.concept)
    bank = parse_bank(doc.encode("utf-8"), str(out))  # proves load_bank accepts what we write
    model = fit_concept_model(bank, get_encoder(args.encoder), seed=args.seed)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out)
    op = model.operating_points[args.concept]
    print(f"wrote {out}: concept {args.concept!r} with {len(labels)} examples ({sum(labels)} positive); "
          f"bank fingerprint {bank.fingerprint[:12]}")
    for point in ("screen", "confirm"):
        m = op[point]
        print(f"  {point:<8} threshold={m['threshold']:.3f} precision={m['precision']:.3f} "
              f"recall={m['recall']:.3f} f1={m['f1']:.3f} ({m['measured_on']})", file=sys.stdout)
    print(f"use it with: analyzer scan INPUT --out RUN --bank {out}")
    return 0
