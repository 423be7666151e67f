"""Concept banks: YAML data files that define the concepts, their prompts, keywords and probe examples.

``load_bank(None)`` returns the packaged default bank (``analyzer/concepts/banks/default.yaml``, found with
importlib.resources so it works from a wheel). Every structural problem raises :class:`InputError` naming the
file and the place in it ("bank FILE: concepts[1].keywords.en.patterns[3]: expected ..., got ...; fix ...").
The format is documented in docs/concepts.md.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from analyzer.errors import InputError

# languages a bank may hold keyword lists for: English and the 20 most common languages of multilingual web alt-text
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "ja", "zh", "pl", "ko", "tr", "vi", "cs", "sv", "id",
             "ar", "fa", "hi", "uk")
# languages whose words run together (ja, zh: no spaces; ko, ar: particles and articles attached to the word): their
# patterns match inside longer strings, without word boundaries
UNSPACED_LANGUAGES = ("ja", "zh", "ko", "ar")
ROLES = ("primary", "context")
SEVERITIES = ("critical", "high", "medium", "low", "info")
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's (0.02 s for the default bank, not 0.17 s)
_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KEYWORD_KINDS = ("patterns", "weak", "exclusions", "counter")


@dataclass(frozen=True)
class Concept:
    id: str
    description: str
    severity: str
    role: str = "context"
    positive_prompts: tuple[str, ...] = ()
    negative_prompts: tuple[str, ...] = ()
    # keywords[lang] = {"patterns": (...), "weak": (...), "exclusions": (...), "counter": (...)}
    keywords: dict = field(default_factory=dict)

    @property
    def primary(self) -> bool:
        return self.role == "primary"


@dataclass(frozen=True)
class ProbeData:
    """Labelled examples for one concept, embedded in a bank by `analyzer probe fit`."""

    concept: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    source: str = ""
    source_sha256: str = ""


@dataclass(frozen=True)
class ConceptBank:
    name: str
    version: str
    description: str
    concepts: list[Concept]
    probes: list[ProbeData]
    fingerprint: str
    path: str
    raw: dict

    @property
    def concept_ids(self) -> list[str]:
        return [c.id for c in self.concepts]

    def get(self, concept_id: str) -> Concept:
        for c in self.concepts:
            if c.id == concept_id:
                return c
        raise InputError(f"expected a concept id among {self.concept_ids}, got {concept_id!r}")

    def probe_examples(self, concept_id: str) -> tuple[list[str], list[int]]:
        texts: list[str] = []
        labels: list[int] = []
        for p in self.probes:
            if p.concept == concept_id:
                texts.extend(p.texts)
                labels.extend(p.labels)
        return texts, labels


def default_bank_path() -> Path:
    return Path(str(resources.files("analyzer.concepts").joinpath("banks/default.yaml")))


def _read_default_bytes() -> tuple[bytes, str]:
    ref = resources.files("analyzer.concepts").joinpath("banks/default.yaml")
    return ref.read_bytes(), "analyzer.concepts/banks/default.yaml"


def load_bank(path: str | Path | None = None) -> ConceptBank:
    """Load and validate a concept bank; ``None`` means the packaged default bank."""
    if path is None:
        data, where = _read_default_bytes()
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"expected a concept bank YAML file, got {str(path)!r} which does not exist; "
                             "omit --bank for the default bank")
        data, where = p.read_bytes(), str(p)
    return parse_bank(data, where)


def parse_bank(data: bytes, where: str = "<bank>") -> ConceptBank:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"bank {where}: expected UTF-8 text, got undecodable bytes; save the file as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"bank {where}:{line}: expected valid YAML, got a syntax error ({problem}); "
                         "fix the indentation or quoting on that line") from None
    err = _Err(where)
    if not isinstance(raw, dict):
        err("", "a mapping with 'version' and 'concepts'", type(raw).__name__)
    version = raw.get("version")
    if not isinstance(version, (str, int, float)) or isinstance(version, bool):
        err("version", "a version string such as \"1.0\"", repr(version))
    concepts_raw = raw.get("concepts")
    if not isinstance(concepts_raw, list) or not concepts_raw:
        err("concepts", "a non-empty list of concepts", repr(concepts_raw)[:60])
    concepts = [_parse_concept(c, i, err) for i, c in enumerate(concepts_raw)]
    ids = [c.id for c in concepts]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        err("concepts", "unique concept ids", f"duplicates {dup}")
    probes = [_parse_probe(p, i, err, ids) for i, p in enumerate(raw.get("probes") or [])]
    if raw.get("probes") is not None and not isinstance(raw.get("probes"), list):
        err("probes", "a list of probe entries", type(raw.get("probes")).__name__)
    return ConceptBank(
        name=str(raw.get("name") or "bank"), version=str(version), description=str(raw.get("description") or ""),
        concepts=concepts, probes=probes, fingerprint=hashlib.sha256(data).hexdigest(), path=where, raw=raw,
    )


class _Err:
    def __init__(self, where: str):
        self.where = where

    def __call__(self, loc: str, expected: str, got: str, fix: str = "fix the bank file (see docs/concepts.md)"):
        loc = f": {loc}" if loc else ""
        raise InputError(f"bank {self.where}{loc}: expected {expected}, got {got}; {fix}")


def _str_list(v, loc: str, err: _Err, *, allow_empty: bool = True) -> tuple[str, ...]:
    if v is None:
        v = []
    if not isinstance(v, list):
        err(loc, "a list of strings", type(v).__name__)
    out = []
    for j, s in enumerate(v):
        if not isinstance(s, str) or not s.strip():
            err(f"{loc}[{j}]", "a non-empty string", repr(s)[:60])
        out.append(s.strip())
    if not allow_empty and not out:
        err(loc, "at least one entry", "an empty list")
    return tuple(out)


def _parse_concept(c, i: int, err: _Err) -> Concept:
    loc = f"concepts[{i}]"
    if not isinstance(c, dict):
        err(loc, "a mapping with id, description, severity, prompts and keywords", type(c).__name__)
    cid = c.get("id")
    if not isinstance(cid, str) or not _ID_RE.match(cid):
        err(f"{loc}.id", "a snake_case id (a-z, 0-9, _)", repr(cid))
    loc = f"concepts[{i}] ({cid})"
    desc = c.get("description")
    if not isinstance(desc, str) or not desc.strip():
        err(f"{loc}.description", "a non-empty description", repr(desc)[:60])
    sev = c.get("severity", "info")
    if sev not in SEVERITIES:
        err(f"{loc}.severity", f"one of {', '.join(SEVERITIES)}", repr(sev))
    role = c.get("role", "context")
    if role not in ROLES:
        err(f"{loc}.role", f"one of {', '.join(ROLES)}", repr(role))
    pos = _str_list(c.get("positive_prompts"), f"{loc}.positive_prompts", err)
    neg = _str_list(c.get("negative_prompts"), f"{loc}.negative_prompts", err)
    kw_raw = c.get("keywords") or {}
    if not isinstance(kw_raw, dict):
        err(f"{loc}.keywords", "a mapping of language code to patterns/weak/exclusions/counter", type(kw_raw).__name__)
    keywords = {}
    for lang, spec in kw_raw.items():
        if lang not in LANGUAGES:
            err(f"{loc}.keywords.{lang}", f"a language code among {', '.join(LANGUAGES)}", repr(lang))
        if not isinstance(spec, dict):
            err(f"{loc}.keywords.{lang}", "a mapping with patterns, weak, exclusions, counter", type(spec).__name__)
        unknown = set(spec) - set(_KEYWORD_KINDS)
        if unknown:
            err(f"{loc}.keywords.{lang}", f"only the keys {', '.join(_KEYWORD_KINDS)}", f"{sorted(unknown)}")
        entry = {}
        for kind in _KEYWORD_KINDS:
            pats = _str_list(spec.get(kind), f"{loc}.keywords.{lang}.{kind}", err)
            for j, pat in enumerate(pats):
                try:
                    re.compile(pat)
                except re.error as exc:
                    err(f"{loc}.keywords.{lang}.{kind}[{j}]", "a valid regular expression", f"{pat!r} ({exc})",
                        "fix or quote the pattern")
            entry[kind] = pats
        keywords[lang] = entry
    if role == "primary" and not (pos or keywords):
        err(loc, "a primary concept with positive prompts or keywords", "neither")
    return Concept(id=cid, description=" ".join(desc.split()), severity=sev, role=role, positive_prompts=pos,
                   negative_prompts=neg, keywords=keywords)


def _parse_probe(p, i: int, err: _Err, ids: list[str]) -> ProbeData:
    loc = f"probes[{i}]"
    if not isinstance(p, dict):
        err(loc, "a mapping with concept and examples", type(p).__name__)
    cid = p.get("concept")
    if cid not in ids:
        err(f"{loc}.concept", f"a concept id of this bank ({', '.join(ids)})", repr(cid))
    ex = p.get("examples")
    if not isinstance(ex, list) or not ex:
        err(f"{loc}.examples", "a non-empty list of {text, label} entries", repr(ex)[:60])
    texts, labels = [], []
    for j, e in enumerate(ex):
        if not isinstance(e, dict) or not isinstance(e.get("text"), str) or e.get("label") not in (0, 1):
            err(f"{loc}.examples[{j}]", "{text: <string>, label: 0 or 1}", repr(e)[:80])
        texts.append(e["text"])
        labels.append(int(e["label"]))
    return ProbeData(concept=cid, texts=tuple(texts), labels=tuple(labels), source=str(p.get("source") or ""),
                     source_sha256=str(p.get("source_sha256") or ""))
