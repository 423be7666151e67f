"""A tiny randomly initialised CLAP model (transformers' ClapModel) saved in Hugging Face format, for tests that need
an audio encoder without downloads: ``save_tiny_clap(folder, seed)`` returns the ``--encoder`` value. The tokenizer is
a word-level BERT tokenizer over a small generated vocabulary (the weights are random: only the code path matters)."""
from __future__ import annotations

from pathlib import Path

WORDS = ("a", "an", "the", "of", "and", "in", "on", "with", "photo", "sound", "tone", "noise", "music", "speech",
         "person", "people", "adult", "child", "kid", "dog", "cat", "car", "street", "beach", "room", "sea")


def save_tiny_clap(folder: Path, seed: int = 0) -> str:
    import torch
    from transformers import BertTokenizerFast, ClapConfig, ClapFeatureExtractor, ClapModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789.,!?"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=80, pad_token_id=0, projection_dim=16)
    audio = dict(window_size=4, num_mel_bins=64, spec_size=256, patch_size=16, patch_stride=(16, 16), depths=[1, 1],
                 num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, projection_dim=16,
                 enable_fusion=False)
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=10, truncation="rand_trunc",
                         padding="repeatpad").save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return f"clap:{folder}"
