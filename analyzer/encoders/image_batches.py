"""Images decoded and preprocessed for an image tower, batch by batch: in torch DataLoader worker processes for
large calls, in process otherwise. Each item is ``(index, pixels or None, error or None)``: an undecodable image is
a per-item error (analyzer/ingest/images.py decodes with the scan's safety limits), never a failed batch."""
from __future__ import annotations

from typing import Sequence

from analyzer.ingest.images import decode_image


def prepared_batches(images: Sequence, preprocess, *, batch_size: int, workers: int, parallel_min_items: int,
                     max_pixels: int, max_side: int, draft: bool = False, pin_memory: bool = False):
    """Yield ``(indexes, stacked pixels or None, errors)`` per batch of ``batch_size`` images."""
    ds = _ImageDataset(images, preprocess, max_pixels, max_side, _image_side(preprocess) if draft else None)
    if workers > 0 and len(images) >= parallel_min_items:
        import torch

        yield from torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                               collate_fn=_collate, pin_memory=pin_memory, prefetch_factor=2)
        return
    for s in range(0, len(images), batch_size):
        yield _collate([ds[i] for i in range(s, min(s + batch_size, len(images)))])


class _ImageDataset:
    """Map-style dataset over raw items; decoding and preprocessing run in the DataLoader workers."""

    def __init__(self, items, preprocess, max_pixels, max_side, draft):
        self.items, self.preprocess = items, preprocess
        self.max_pixels, self.max_side, self.draft = max_pixels, max_side, draft

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, err = decode_image(self.items[i], max_pixels=self.max_pixels, max_side=self.max_side,
                                draft_size=self.draft)
        if img is None:
            return i, None, err
        try:
            return i, self.preprocess(img), None
        except Exception as exc:  # noqa: BLE001 - one bad image never stops the batch
            return i, None, f"preprocessing failed: {type(exc).__name__}: {str(exc)[:160]}"


def _collate(samples):
    import torch

    idx = [s[0] for s in samples]
    errs = [s[2] for s in samples]
    ok = [s[1] for s in samples if s[1] is not None]
    pixels = torch.stack(ok) if ok else None
    return idx, pixels, errs


def _image_side(preprocess) -> int | None:
    for t in getattr(preprocess, "transforms", []):
        size = getattr(t, "size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, (tuple, list)) and size:
            return int(min(size))
    return None
