"""The coverage part of the concept model's scoring surface (analyzer/tagging/batch.py), for test models that score
with fixed weights: every modality calibrated, every caption English and supported."""
from __future__ import annotations


class CoverageStub:
    def calibrated_for(self, modality: str) -> bool:
        return True

    def caption_languages(self, texts) -> list[str]:
        return ["en"] * len(texts)

    def language_supported(self, lang: str) -> bool:
        return True
