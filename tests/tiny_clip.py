"""A tiny randomly initialised open_clip model saved to a local safetensors checkpoint, for tests that need an
image encoder without downloads: ``save_tiny_clip(folder, name, seed)`` returns the ``--encoder`` value."""
from __future__ import annotations

import json
from pathlib import Path

TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def save_tiny_clip(folder: Path, name: str, seed: int = 0) -> str:
    """Write ``name.json`` (the architecture) and ``tiny.safetensors`` (seeded random weights) into ``folder``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / f"{name}.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "tiny.safetensors")
    return f"openclip:{cfg}:{folder / 'tiny.safetensors'}"
