"""`analyzer stress PROMPTS.csv GENERATIONS... --out RUN [--compare RUN_B]`: a model's generations through the
scan's taggers, per prompt and per category, with the prompts whose generations drift (analyzer/stress/)."""
from __future__ import annotations

from analyzer.encoders import DEFAULT_ENCODER


def register(subparsers) -> None:
    s = subparsers.add_parser("stress", help="stress-test a model's generations against a prompt suite")
    s.add_argument("prompts", help="prompt suite CSV (prompt_id, prompt, category), or builtin:starter")
    s.add_argument("generations", nargs="+",
                   help="generations keyed by prompt_id: a table (prompt_id + caption and/or --embedding-column), "
                        "a media folder with one sub-directory per prompt id, or webdataset shards")
    s.add_argument("--out", required=True, help="stress run directory")
    s.add_argument("--compare", metavar="RUN_B", help="another stress run to set beside this one")
    s.add_argument("--label", help="this run's name in comparisons (default: the --out folder's name)")
    s.add_argument("--point", choices=("screen", "confirm"), default="screen",
                   help="operating point of the tags (default: screen)")
    s.add_argument("--prompt-id-column", default="prompt_id", help="column holding the prompt id (default prompt_id)")
    s.add_argument("--text-column", help="caption column of text generations (auto: text, caption, ...)")
    s.add_argument("--id-column", help="generation id column (auto: key, id, ...)")
    s.add_argument("--embedding-column", help="precomputed embedding column (list of floats)")
    s.add_argument("--embedding-modality", choices=("text", "image"), help="what the precomputed embeddings encode")
    s.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"encoder (default {DEFAULT_ENCODER}; images: "
                                                             "openclip:ARCH:PRETRAINED)")
    s.add_argument("--bank", help="concept bank YAML (default: the packaged bank)")
    s.add_argument("--batch-size", type=int, default=None, help="rows per batch")
    s.add_argument("--hash-list", action="append", help="known-hash list ([kind:][name=]path), repeatable")
    s.add_argument("--media-option", action="append", metavar="KEY=VALUE", help="video/audio/image option, repeatable")
    s.add_argument("--cache-dir", help="directory for fitted concept models (default: $ANALYZER_CACHE_DIR)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing stress run")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=run)


def run(a) -> int:
    from analyzer.cli.dataset_options import key_values
    from analyzer.config import use_cache_dir
    from analyzer.stress import run_stress

    use_cache_dir(a.cache_dir)
    s = run_stress(a.prompts, a.generations, out=a.out, compare=a.compare, label=a.label, point=a.point,
                   prompt_id_column=a.prompt_id_column, text_column=a.text_column, id_column=a.id_column,
                   embedding_column=a.embedding_column, embedding_modality=a.embedding_modality, encoder=a.encoder,
                   bank=a.bank, batch_size=a.batch_size, hash_lists=a.hash_list or (),
                   media_options=key_values(a.media_option, "--media-option"), quiet=a.quiet, overwrite=a.overwrite)
    g = s["generations"]
    print(f"stress: {g['rows']} generations ({g['scored']} scored) for {s['suite']['prompts']} prompts; prompts "
          f"drifting: {len(s['flagged_prompts'])}; escalated generations: {s['escalation']['generations']}")
    if s["model"].get("calibration_warning"):
        print(s["model"]["calibration_warning"])
    if "compare" in s:
        print(f"compare: {len(s['compare']['differences'])} differences whose interval excludes zero")
    print(f"report: {a.out}/stress.md")
    return 0
