"""Provenance evidence (analyzer/ingest/provenance.py, analyzer/reporting/provenance.py): LAION's punsafe and
pwatermark columns carried as item columns into summary.json and the report, and C2PA manifests read from media
bytes. Every image here is a generated flat colour field; vectors are SYNTHETIC prototype directions through the
test encoder (tests/media_stubs.py)."""
from __future__ import annotations

import datetime
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from analyzer.cli import main
from analyzer.ingest import ColumnSpec, open_input
from analyzer.ingest.provenance import probability_column, provenance_columns, read_c2pa
from media_fixtures import BACKGROUND
from media_stubs import COLOUR_B, DIM, PROTO, ColourEncoder, synthetic_concept_model


@pytest.fixture()
def stubs(monkeypatch):
    import analyzer.concepts
    import analyzer.encoders

    monkeypatch.setattr(analyzer.encoders, "get_encoder", lambda name=None, **kw: ColourEncoder())
    monkeypatch.setattr(analyzer.concepts, "fit_concept_model",
                        lambda bank, encoder, seed=0, *, modality="text", cache=None: synthetic_concept_model(bank))


# ---- punsafe / pwatermark ------------------------------------------------------------------------------------

def test_provenance_names_and_values():
    assert provenance_columns(["URL", "TEXT", "punsafe", "PWATERMARK"]) == {"punsafe": "punsafe",
                                                                            "pwatermark": "PWATERMARK"}
    assert provenance_columns(["URL"]) == {"punsafe": None, "pwatermark": None}
    got = probability_column(pa.array(["0.25", "n/a", "", "1.5", None, "1"]), 6).to_pylist()
    assert got == [0.25, None, None, None, None, 1.0]  # not a probability: null, never an error
    got = probability_column(pa.array([0.1, float("nan"), -0.2, None]), 4).to_pylist()
    assert got[0] == pytest.approx(0.1) and got[1:] == [None, None, None]


def _laion_style(path, n_per_source=20, seed=0):
    """LAION-style metadata (key, URL, punsafe, pwatermark) with SYNTHETIC vectors: on site-a.example every item
    with punsafe >= 0.5 carries the adult_sexual prototype; site-b.example is background only."""
    rng = np.random.default_rng(seed)
    rows = {"key": [], "URL": [], "punsafe": [], "pwatermark": [], "embedding": []}
    for s, site in enumerate(("site-a.example", "site-b.example")):
        for i in range(n_per_source):
            unsafe = site == "site-a.example" and i < 5
            v = PROTO["none"] + rng.normal(0, 0.05, DIM) + (1.3 * PROTO["adult_sexual"] if unsafe else 0)
            rows["key"].append(f"{s}-{i}")
            rows["URL"].append(f"https://img.{site}/{i}.jpg")
            rows["punsafe"].append(0.9 if unsafe else 0.05)
            rows["pwatermark"].append(0.8 if i % 4 == 0 else 0.1)
            rows["embedding"].append((v / np.linalg.norm(v)).astype(np.float32).tolist())
    rows["punsafe"][-1] = None  # one item without the column's value
    pq.write_table(pa.table({**{k: v for k, v in rows.items() if k != "embedding"},
                             "embedding": pa.array(rows["embedding"], pa.list_(pa.float32()))}), path)
    return path


def test_punsafe_and_pwatermark_reach_the_items_summary_and_report(tmp_path, stubs):
    data = _laion_style(tmp_path / "laion.parquet")
    run = tmp_path / "run"
    assert main(["scan", str(data), "--out", str(run), "--embedding-column", "embedding", "--encoder", "test",
                 "--quiet"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["present"] is True
    by = {s["source"]: s for s in prov["sources"]}
    assert by["ALL"]["items"] == 40 and by["ALL"]["punsafe_items"] == 39 and by["ALL"]["punsafe_high"] == 5
    assert by["site-a.example"]["punsafe_high"] == 5 and by["site-b.example"]["punsafe_high"] == 0
    assert by["ALL"]["pwatermark_high"] == 10 and by["site-a.example"]["pwatermark_high_share"] == pytest.approx(0.25)
    rates = {r["evidence"]: r for r in prov["tag_rates"]}
    assert rates["punsafe >= high"]["scanned"] == 5 and rates["punsafe >= high"]["adult_sexual"] == 5
    assert rates["punsafe < high"]["adult_sexual"] == 0 and rates["punsafe >= high"]["adult_sexual_rate_lo"] > 0.4
    md = (run / "report.md").read_text()
    assert "## Provenance evidence" in md and "site-a.example" in md.split("## Provenance evidence")[1]
    import duckdb

    con = duckdb.connect(str(run / "analysis.duckdb"), read_only=True)
    try:
        got = dict(con.execute("SELECT item_id, punsafe FROM items WHERE item_id IN ('0-0', '1-19')").fetchall())
    finally:
        con.close()
    assert got["0-0"] == pytest.approx(0.9) and got["1-19"] is None


def test_a_laion_layout_carries_punsafe_from_its_metadata(tmp_path):
    (tmp_path / "img_emb").mkdir()
    (tmp_path / "metadata").mkdir()
    np.save(tmp_path / "img_emb" / "img_emb_0.npy", np.eye(4, 8, dtype=np.float16))
    pq.write_table(pa.table({"key": ["a", "b", "c", "d"], "punsafe": [0.1, 0.95, None, 0.5],
                             "pwatermark": [0.0, 0.2, 0.3, 0.9]}), tmp_path / "metadata" / "metadata_0.parquet")
    batch = next(open_input([str(tmp_path)], ColumnSpec()).iter_batches(10))
    assert [None if v is None else round(v, 3) for v in batch.column("punsafe").to_pylist()] == [0.1, 0.95, None, 0.5]
    assert [round(v, 3) for v in batch.column("pwatermark").to_pylist()] == [0.0, 0.2, 0.3, 0.9]


def test_a_dataset_without_provenance_has_no_section(tmp_path, stubs):
    rng = np.random.default_rng(0)
    vecs = [(PROTO["none"] + rng.normal(0, 0.05, DIM)).astype(np.float32).tolist() for _ in range(6)]
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(6)], "embedding": pa.array(vecs, pa.list_(pa.float32()))}),
                   tmp_path / "plain.parquet")
    run = tmp_path / "run"
    assert main(["scan", str(tmp_path / "plain.parquet"), "--out", str(run), "--embedding-column", "embedding",
                 "--encoder", "test", "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["provenance"]["present"] is False
    assert "## Provenance evidence" not in (run / "report.md").read_text()


# ---- C2PA ----------------------------------------------------------------------------------------------------

def _test_signer():
    """A throwaway test CA and signing certificate (EC P-256), made here: never trusted by anything."""
    import c2pa
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "analyzer tests")])

    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(days=3650)

    def usage(sign: bool):
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign, crl_sign=not sign,
                             encipher_only=False, decipher_only=False)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test root")).issuer_name(name("test root"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("test signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pkey = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, pkey, None))


def _png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, "PNG")
    return buf.getvalue()


def _signed(png: bytes, *, ai: bool) -> bytes:
    """``png`` with a C2PA manifest (c2pa.created; trainedAlgorithmicMedia when ``ai``) signed by the test signer."""
    import c2pa

    action = {"action": "c2pa.created"}
    if ai:
        action["digitalSourceType"] = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    else:
        action["digitalSourceType"] = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    manifest = {"claim_generator_info": [{"name": "analyzer-test-generator", "version": "1.0"}],
                "title": "generated.png", "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}]}
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(_test_signer(), "image/png", io.BytesIO(png), out)
    return out.getvalue()


def test_read_c2pa_states():
    plain = _png(BACKGROUND)
    assert read_c2pa(plain) == ("absent", None, None)
    state, ai, gen = read_c2pa(_signed(plain, ai=True))
    assert state in ("Valid", "Trusted") and ai is True and gen == "analyzer-test-generator/1.0"
    assert read_c2pa(_signed(plain, ai=False))[1] is False
    assert read_c2pa(b"not a media file at all")[0] == "unsupported"


def test_a_signed_generated_image_is_read_back_in_a_scan(tmp_path, stubs):
    data = tmp_path / "images" / "gen"
    data.mkdir(parents=True)
    (data / "signed_ai.png").write_bytes(_signed(_png(BACKGROUND), ai=True))
    (data / "signed_adult.png").write_bytes(_signed(_png(COLOUR_B), ai=True))  # COLOUR_B -> adult_sexual (synthetic)
    (data / "plain.png").write_bytes(_png(BACKGROUND))
    run = tmp_path / "run"
    assert main(["scan", str(tmp_path / "images"), "--out", str(run), "--encoder", "test", "--quiet",
                 "--media-option", "detector=none"]) == 0
    import duckdb

    con = duckdb.connect(str(run / "analysis.duckdb"), read_only=True)
    try:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT item_id, c2pa_state, c2pa_ai_generated, c2pa_claim_generator FROM items").fetchall()}
    finally:
        con.close()
    assert rows["gen/plain.png"] == ("absent", None, None)
    assert rows["gen/signed_ai.png"][0] in ("Valid", "Trusted") and rows["gen/signed_ai.png"][1:] == (
        True, "analyzer-test-generator/1.0")
    prov = json.loads((run / "summary.json").read_text())["provenance"]
    total = prov["sources"][0]
    assert total["source"] == "ALL" and total["c2pa_manifests"] == 2 and total["c2pa_ai_generated"] == 2
    rates = {r["evidence"]: r for r in prov["tag_rates"]}
    assert rates["c2pa ai-generated"]["scanned"] == 2 and rates["c2pa ai-generated"]["adult_sexual"] == 1
    assert "## Provenance evidence" in (run / "report.md").read_text()


def test_webdataset_json_and_imagefolder_metadata_carry_punsafe(tmp_path):
    import tarfile

    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for key, meta in (("000", {"url": "https://a.example/0.png", "punsafe": 0.7, "pwatermark": 0.05}),
                          ("001", {"url": "https://a.example/1.png"})):
            for ext, payload in (("png", _png(BACKGROUND)), ("json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    batch = next(open_input([str(shards)], ColumnSpec()).iter_batches(10))
    assert [None if v is None else round(v, 3) for v in batch.column("punsafe").to_pylist()] == [0.7, None]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.png").write_bytes(_png(BACKGROUND))
    (folder / "metadata.csv").write_text("file_name,pwatermark\nx.png,0.6\n")
    batch = next(open_input([str(folder)], ColumnSpec()).iter_batches(10))
    assert round(batch.column("pwatermark")[0].as_py(), 3) == 0.6 and batch.column("punsafe")[0].as_py() is None
