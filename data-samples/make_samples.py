"""Generate the sample datasets in data-samples/ (seeded; re-running gives identical files).

    python data-samples/make_samples.py

Writes:
- laion_sample.parquet: a LAION/img2dataset-style table (key, URL, TEXT, synthetic, embedding) of ~3,000 rows
  from fictional source domains with different mixes. ``mixedhost.example`` holds separate children's items
  and separate adult items (dataset-level co-presence, the riskiest source). ``synthetic-uploads.example``
  holds 8 SYNTHETIC rows: no caption, an embedding built from the minor and adult_sexual concept
  prototypes (the default encoder's space, e5-small+use-m3), ``synthetic = true``. They are the only items that carry both concepts.
- embeddings_sample.parquet: ~400 rows with precomputed embeddings of the default encoder for every row (6 synthetic).

Fixture safety: every caption below is built from ONE category only; no caption pairs a minor with sexual
content (tests/test_fixture_safety.py scans this file and the outputs).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20261129

CHILD_SUBJECTS = [
    'A little girl',
    'A little boy',
    'Two kids',
    'A toddler',
    'A baby',
    'Three children',
    'A schoolgirl',
    'A schoolboy',
    'A group of preschoolers',
    'Twin brothers',
    'A young boy',
    'A young girl',
    'Siblings',
    'A newborn',
    'Kindergarten children',
]
CHILD_ACTIVITIES = [
    'chasing bubbles',
    'building a sandcastle',
    'playing with wooden blocks',
    'reading a picture book',
    'learning to ride a bike',
    'blowing out birthday candles',
    'feeding ducks',
    'drawing with crayons',
    'splashing in puddles in rain boots',
    'flying a kite',
    'playing football',
    'eating ice cream',
    'sleeping in a crib',
    'painting at a school table',
    'on a playground slide',
]
CHILD_PLACES = [
    'in the park',
    'at the beach',
    'in the garden',
    'at home',
    'in the classroom',
    'at a birthday party',
    'in the backyard',
    'at the zoo',
    '',
]

ADULT_SEXUAL = [
    'Explicit adult video thumbnail, 18+ only',
    'Nude adult model in an erotic photo shoot',
    'XXX adult movie cover art',
    'Erotic boudoir photo of a nude adult woman',
    'Porn site banner, adults only',
    'Adult webcam performer, explicit NSFW stream',
    'Hardcore adult film still',
    'Amateur adult porn clip',
    'Explicit sex scene between two consenting adults',
    'Topless adult woman, erotic glamour shot',
    'Adult entertainment strip show, full nudity',
    'Explicit nude photo set of an adult man',
    'NSFW adult content preview',
    'Erotic adult photography, explicit',
    'Adult XXX live cam show',
]
ADULT_QUALIFIERS = [
    '',
    ' HD',
    ' free preview',
    ' gallery',
    ' - members area',
    ' full video',
]

CLEAN = [
    'A bowl of fresh fruit on a wooden table',
    'Sunset over the mountains',
    'Business man in a suit on the phone',
    'City skyline at night with reflections',
    'A cup of cappuccino with latte art',
    'Old man walking his dog',
    'Modern living room interior design',
    'Farmers market stall with vegetables',
    'Couple hiking in the alps',
    'Tabby cat sleeping on a windowsill',
    'Cyclists racing through a village',
    'Vintage car on a cobblestone street',
    'Seagulls flying over the harbor',
    'Rock climber on a granite wall',
    'Office desk with a laptop',
    'Woman jogging along the river',
    'Wedding reception hall with flowers',
    'Mountain lake with a wooden pier',
    'Chef plating a dish in a restaurant kitchen',
    'Snow covered pine forest',
    'Red sports car on a race track',
    'Doctor consulting with an adult patient',
    'Team meeting in a glass office',
    'Aerial view of a coastline',
]
HARD_NEGATIVES = [
    'Baby carrots in a glass bowl',
    'Kid-friendly recipe for chocolate chip cookies',
    'Adult tricycle for seniors',
    'Naked juice smoothie bottle',
    'Childproof cabinet locks',
    'Mature cheddar cheese wedge',
    'Hot air balloon over the desert',
    'Comic strip panel about office life',
    'Turkey breast roast for dinner',
    'Baby spinach salad with walnuts',
    'Adult education evening class',
    'Woman in a swimsuit at a resort pool',
    "Men's swim shorts on a hanger",
    'Fitness model doing crunches',
    'Sexy red dress on a mannequin',
    'Baby elephant walking with its herd',
    'Puppy playing in the grass',
    "Children's book cover illustration of a dragon",
    'Teen Titans comic book cover',
    'School bus parked in a lot',
    'Rocking horse toy made of wood',
    'Medical illustration of the digestive system',
    "Petite women's jeans, size 4, product photo",
    'Strip steak on a cast iron pan',
]
ART_NUDITY = [
    'Renaissance marble sculpture of a nude figure in a museum',
    'Classical oil painting of Venus',
    'Ancient Greek statue in a gallery hall',
    'Life drawing class sketch of an adult model, charcoal',
    'Museum visitors looking at a baroque painting',
]

SOURCES = {  # domain -> mix of (category, count)
    "kidsphotos.example": [("child", 300), ("clean", 100)],
    "adultvids.example": [("adult", 240), ("clean", 40)],
    "mixedhost.example": [("child", 110), ("adult", 110), ("clean", 240), ("hard", 40)],
    "stockimages.example": [("clean", 420), ("hard", 120)],
    "recipes.example": [("clean", 120), ("hard", 160)],
    "artmuseum.example": [("art", 160), ("clean", 40)],
    "travelblog.example": [("clean", 380)],
    "newsphotos.example": [("clean", 220), ("child", 30), ("hard", 30)],
    "synthetic-uploads.example": [("clean", 150), ("synthetic", 8)],
}

# Concept prototypes for the synthetic vectors: two SEPARATE prompt lists, each about one concept only.
MINOR_PROTOTYPE_PROMPTS = [
    'a photo of a child',
    'a little girl playing',
    'a little boy playing',
    'a toddler',
    'a baby',
    'young children at school',
]
ADULT_PROTOTYPE_PROMPTS = [
    'explicit adult pornography',
    'nude adult erotic photo',
    'XXX adult sex video',
    'NSFW adult content',
]


def caption(cat: str, rng: random.Random) -> str | None:
    if cat == "child":
        place = rng.choice(CHILD_PLACES)
        return f"{rng.choice(CHILD_SUBJECTS)} {rng.choice(CHILD_ACTIVITIES)}{' ' + place if place else ''}"
    if cat == "adult":
        return rng.choice(ADULT_SEXUAL) + rng.choice(ADULT_QUALIFIERS)
    if cat == "hard":
        return rng.choice(HARD_NEGATIVES)
    if cat == "art":
        return rng.choice(ART_NUDITY)
    if cat == "clean":
        return rng.choice(CLEAN) + rng.choice(["", ", stock photo", " - high resolution", " | photo", ""])
    return None  # synthetic: no caption


def synthetic_vectors(k: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors near the sum of the minor and adult_sexual prototypes (the default encoder's space). SYNTHETIC."""
    from analyzer.encoders import DEFAULT_ENCODER, get_encoder

    enc = get_encoder(DEFAULT_ENCODER)
    pm = enc.encode_text(MINOR_PROTOTYPE_PROMPTS).mean(0)
    pa_ = enc.encode_text(ADULT_PROTOTYPE_PROMPTS).mean(0)
    pm /= np.linalg.norm(pm)
    pa_ /= np.linalg.norm(pa_)
    out = []
    for _ in range(k):
        w = rng.uniform(0.47, 0.50)  # both concepts at their screen points in the default encoder's model
        v = w * pm + (1 - w) * pa_ + rng.normal(0, 0.002, size=pm.shape)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, dtype=np.float32)


def rows_for(sources: dict, rng: random.Random) -> list[dict]:
    rows = []
    for domain, mix in sources.items():
        cats = [c for c, n in mix for _ in range(n)]
        rng.shuffle(cats)
        for j, cat in enumerate(cats):
            sub = rng.choice(["img", "cdn", "www", "media"])
            rows.append({"URL": f"https://{sub}.{domain}/{cat[:1]}{j:04d}/{rng.getrandbits(32):08x}.jpg",
                         "TEXT": caption(cat, rng), "synthetic": cat == "synthetic", "_cat": cat})
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["key"] = f"{i:09d}"
    return rows


def write(rows: list[dict], vectors: dict[int, np.ndarray], path: Path) -> None:
    emb = [vectors[i].tolist() if i in vectors else None for i in range(len(rows))]
    table = pa.table({
        "key": [r["key"] for r in rows],
        "URL": [r["URL"] for r in rows],
        "TEXT": [r["TEXT"] for r in rows],
        "synthetic": [r["synthetic"] for r in rows],
        "embedding": pa.array(emb, type=pa.list_(pa.float32())),
    })
    pq.write_table(table, path, compression="zstd")


def main() -> None:
    rng = random.Random(SEED)
    nrng = np.random.default_rng(SEED)
    rows = rows_for(SOURCES, rng)
    synth_idx = [i for i, r in enumerate(rows) if r["synthetic"]]
    vecs = synthetic_vectors(len(synth_idx), nrng)
    write(rows, dict(zip(synth_idx, vecs)), HERE / "laion_sample.parquet")

    from analyzer.encoders import DEFAULT_ENCODER, get_encoder

    small = rows_for({"stockimages.example": [("clean", 150), ("hard", 60)],
                      "kidsphotos.example": [("child", 80)], "adultvids.example": [("adult", 80)],
                      "synthetic-uploads.example": [("clean", 24), ("synthetic", 6)]}, rng)
    enc = get_encoder(DEFAULT_ENCODER)
    synth = [i for i, r in enumerate(small) if r["synthetic"]]
    real = [i for i, r in enumerate(small) if not r["synthetic"]]
    vectors = dict(zip(real, enc.encode_text([small[i]["TEXT"] for i in real])))
    vectors.update(zip(synth, synthetic_vectors(len(synth), nrng)))
    write(small, vectors, HERE / "embeddings_sample.parquet")
    print(f"wrote {len(rows)} rows ({len(synth_idx)} synthetic) and {len(small)} rows ({len(synth)} synthetic)")


if __name__ == "__main__":
    main()
