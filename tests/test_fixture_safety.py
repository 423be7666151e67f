"""The absolute rule: no file in data-samples/, tests/, notebooks/ or the packaged concept data pairs a
minor with sexual content. Every text unit (a line of a text file, a string cell of a parquet/CSV file, a
line of a notebook cell) is checked for a minor term and a sexual term together; any hit fails the test.

The concept ids themselves ("minor", "adult_sexual") are names, not content, and are not counted.
Items that must carry both concepts are synthetic vectors with no caption.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "data-samples", ROOT / "tests", ROOT / "notebooks", ROOT / "analyzer" / "concepts" / "data",
           ROOT / "analyzer" / "concepts" / "banks", ROOT / "benchmarks" / "data",
           ROOT / "analyzer" / "stress" / "prompts"]  # the packaged stress prompt suites

# Minor terms (en, de, fr, es, it, pt, nl). One list per line on purpose: this file is scanned too.
MINOR_TERMS = r"child|children|childs?|kids?|kiddies|boys?|girls?|bab(?:y|ies)|toddlers?|teens?|teenagers?|infants?|newborns?|schoolgirls?|schoolboys?|preschoolers?|underage|kindergarten|juveniles?|youngsters?|pupils?|preteens?|tweens?|lolita|kinder|kind|mädchen|maedchen|junge|jungen|enfants?|fillettes?|garçons?|bébés?|niños?|niñas?|ninos?|ninas?|bebés?|bambin[oaie]|ragazzin[oaie]|crianças?|criancas?|menin[oa]s?|meisjes?|jongens?|kinderen"
SEXUAL_TERMS = r"sex|sexy|sexual|sexually|porn\w*|nude|nudes|nudity|naked|erotic\w*|xxx|nsfw|topless|explicit|fetish\w*|hardcore|strip(?:per|tease)|lingerie|escort|orgasm\w*|genital\w*|nackt\w*|erotisch\w*|érotique\w*|desnud\w*|erótic\w*|erotic[oaie]|nud[oaie]|pelad[oa]s?|naakt"

# The other languages of the packaged training captions (ru, uk, pl, cs, sv, tr, id, vi, ar, fa, hi), matched as
# words, and Chinese, Japanese and Korean, matched anywhere in a text (no spaces between their words). Left out on
# purpose, as they are other words in a language scanned here: Swedish "barn" (English barn), Turkish "bebek"
# (Indonesian duck), Polish "naga" (Indonesian dragon).
MINOR_TERMS_INTL = r"ребёнок|ребенок|ребёнка|ребенка|дети|детей|детский|детская|девочка|девочки|мальчик|мальчики|малыш\w*|подрост\w*|школьни\w*|несовершеннолетн\w*|дитина|дитини|діти|дітей|дівчинка|хлопчик|підліт\w*|школяр\w*|неповнолітн\w*|dziecko|dziecka|dzieci|dziewczynk\w*|chłopiec|chłopca|nastolat\w*|niemowl\w*|uczennic\w*|nieletni\w*|dítě|děti|dětí|holčičk\w*|chlapec|chlapci|kojen\w*|nezletil\w*|barnen|flick\w*|pojk\w*|tonåring\w*|bebis|minderårig\w*|çocuk\w*|kız|anak|anak-anak|balita|remaja|bayi|trẻ em|em bé|bé gái|bé trai|thiếu niên|طفل|أطفال|طفلة|فتاة|صبي|رضيع|قاصر|کودک|کودکان|بچه|دختربچه|پسربچه|نوجوان|خردسال|बच्चा|बच्चे|बच्ची|लड़की|लड़का|किशोर|नाबालिग"
SEXUAL_TERMS_INTL = r"секс\w*|порн\w*|голая|голый|голые|обнажённ\w*|обнаженн\w*|эроти\w*|гола|голий|оголен\w*|еротич\w*|seks\w*|porno\w*|nagi|nagie|nagą|nagość|erotyczn\w*|nahá|nahý|nahé|erotick\w*|porr\w*|naken|nakna|erotisk\w*|çıplak|erotik|telanjang|bugil|erotis|khiêu dâm|khỏa thân|tình dục|جنسي|إباحي|عاري|عارية|سکس|جنسی|پورن|برهنه|لخت|सेक्स|अश्लील|नग्न|कामुक"
MINOR_TERMS_CJK = r"子供|子ども|児童|幼児|赤ちゃん|女児|男児|未成年|儿童|孩子|小孩|女孩|男孩|幼儿|婴儿|少女|少年|어린이|아동|소녀|소년|아기|미성년"
SEXUAL_TERMS_CJK = r"セックス|ポルノ|ヌード|全裸|裸体|色情|性爱|做爱|情色|裸露|섹스|포르노|나체|누드|야한"

_MINOR = re.compile(rf"(?<!\w)(?:{MINOR_TERMS}|{MINOR_TERMS_INTL})(?!\w)|{MINOR_TERMS_CJK}", re.IGNORECASE)
_SEXUAL = re.compile(rf"(?<!\w)(?:{SEXUAL_TERMS}|{SEXUAL_TERMS_INTL})(?!\w)|{SEXUAL_TERMS_CJK}", re.IGNORECASE)


def pairs_both(text: str) -> bool:
    return bool(_MINOR.search(text)) and bool(_SEXUAL.search(text))


def _is_term_list(line: str) -> bool:
    # The term-list lines of this very file.
    return line.startswith(tuple(f"{name}_TERMS{suffix} = r" for name in ("MINOR", "SEXUAL")
                                 for suffix in ("", "_INTL", "_CJK")))


def text_units(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pq.read_table(path)
        for name in table.column_names:
            col = table.column(name)
            if str(col.type) in ("string", "large_string"):
                for i, v in enumerate(col.to_pylist()):
                    if v:
                        yield f"{name}[{i}]", v
        return
    if suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        for ci, cell in enumerate(nb.get("cells", [])):
            src = cell.get("source", "")
            src = "".join(src) if isinstance(src, list) else src
            for li, line in enumerate(src.splitlines(), 1):
                yield f"cell {ci} line {li}", line
            for out in cell.get("outputs", []):
                yield f"cell {ci} output", json.dumps(out)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return  # binary files (generated benign images) carry no text
    for li, line in enumerate(text.splitlines(), 1):
        yield f"line {li}", line


def scanned_files():
    for base in SCANNED:
        if base.exists():
            for p in sorted(base.rglob("*")):
                if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts:
                    yield p


def test_scanner_detects_a_pairing():
    # Built from separate fragments at run time so that no line of this file pairs the two.
    minor_word, sexual_word = "chi" + "ld", "nu" + "de"
    assert pairs_both(f"a {minor_word} ... {sexual_word}")
    assert not pairs_both(f"a {minor_word} flying a kite")
    assert not pairs_both(f"an adult {sexual_word} photo")
    assert not pairs_both("the minor and adult_sexual concepts")  # concept ids are names, not content
    assert pairs_both("Kin" + "der und " + "na" + "ckt")
    assert not pairs_both("scene be" + "tween two adults, " + "ex" + "plicit")  # no partial-word matches


@pytest.mark.parametrize("minor_word, sexual_word, benign", [
    ("ребё" + "нок", "гол" + "ая", "ребё" + "нок и собака"),  # ru
    ("dzie" + "cko", "na" + "gie", "dzie" + "cko i pies"),  # pl
    ("çocu" + "k", "çıp" + "lak", "çocu" + "k ve köpek"),  # tr
    ("طف" + "ل", "عار" + "ية", "طف" + "ل مع كلب"),  # ar
    ("बच्" + "चा", "नग्" + "न", "बच्" + "चा और कुत्ता"),  # hi
    ("子" + "供", "ヌー" + "ド", "子" + "供と犬"),  # ja: no spaces, matched anywhere
    ("儿" + "童", "裸" + "体", "儿" + "童和狗"),  # zh
    ("어린" + "이가", "누" + "드", "어린" + "이와 강아지"),  # ko: a particle attached to the word
])
def test_scanner_detects_a_pairing_in_other_languages(minor_word, sexual_word, benign):
    # Built from fragments at run time, as above: no line of this file pairs the two.
    assert pairs_both(f"{minor_word} {sexual_word}")
    assert not pairs_both(benign)
    assert not pairs_both(f"{sexual_word} 2024")


def test_scanned_tree_is_not_empty():
    files = list(scanned_files())
    assert any(p.suffix == ".parquet" for p in files), "expected the sample parquet files to be scanned"
    assert any(p.name == "test_fixture_safety.py" for p in files)


@pytest.mark.parametrize("path", list(scanned_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_pairs_a_minor_with_sexual_content(path: Path):
    hits = [where for where, text in text_units(path) if not _is_term_list(text.strip()) and pairs_both(text)]
    assert not hits, f"{path.relative_to(ROOT)} pairs a minor term with a sexual term at: {hits[:5]}"


def test_synthetic_rows_have_no_caption():
    table = pq.read_table(ROOT / "data-samples" / "laion_sample.parquet").to_pylist()
    synthetic = [r for r in table if r["synthetic"]]
    assert synthetic, "expected synthetic rows in the demo sample"
    assert all(r["TEXT"] is None and r["embedding"] is not None for r in synthetic)
    assert all(r["embedding"] is None for r in table if not r["synthetic"])
