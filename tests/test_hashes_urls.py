"""URL normalisation (the documented rules) and property-based checks of URL and list parsing."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.errors import InputError
from analyzer.hashes.lists import load_hash_lists, parse_spec
from analyzer.hashes.urls import normalize_url, url_digest, url_host

CASES = [
    ("HTTPS://User:pw@Example.COM:443/a/./b/../c/?x=%7e%2f#frag", "http://example.com/a/c?x=~%2F"),
    ("example.com", "http://example.com/"),
    ("//EXAMPLE.com./p%41th\\x", "http://example.com/pAth/x"),
    ("http://example.com:8080/a%20b/", "http://example.com:8080/a%20b"),
    ("http://example.com:80", "http://example.com/"),
    ("https://example.com:80/", "http://example.com:80/"),  # 80 is not https's default port
    ("http://bücher.de/ä?q= 1", "http://xn--bcher-kva.de/%C3%A4?q=%201"),
    ("http://[::1]:80/x/", "http://[::1]/x"),
    ("http://example.com/%zz%", "http://example.com/%25zz%25"),
    ("http://example.com/a?", "http://example.com/a"),
    ("http://example.com/a?b=1&a=2", "http://example.com/a?b=1&a=2"),  # query order kept
    ("  ftp://Host:21/dir/  ", "ftp://host/dir"),
]


@pytest.mark.parametrize("raw, expected", CASES)
def test_normalize_url_rules(raw, expected):
    assert normalize_url(raw) == expected


def test_null_urls():
    assert normalize_url(None) is None and normalize_url("   ") is None
    assert url_digest(None) is None and url_host("") is None


def test_url_digest_and_host():
    import hashlib

    assert url_digest("HTTPS://Example.com/a/") == hashlib.md5(b"http://example.com/a").hexdigest()
    assert url_digest("example.com/a", "sha256") == hashlib.sha256(b"http://example.com/a").hexdigest()
    assert url_host("https://Images.Example.org:8443/x") == "images.example.org"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60))
def test_normalize_url_is_total_idempotent_and_ascii(text):
    norm = normalize_url(text)
    if norm is None:
        assert not text.strip()
        return
    assert normalize_url(norm) == norm
    assert norm.isascii() and not any(c.isspace() for c in norm) and "#" not in norm


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=70), max_size=6),
       st.sampled_from(["", "md5:", "pdq:", "url:", "sha256:"]),
       st.sampled_from(["list.txt", "list.csv"]))
def test_any_list_file_loads_or_raises_input_error(tmp_path_factory, lines, prefix, fname):
    path = tmp_path_factory.mktemp("lists") / fname
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        lists = load_hash_lists([prefix + str(path)])
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert lists.lists[0].n_entries >= 1


def test_parse_spec_forms():
    assert parse_spec("pdq:known=lists/k.csv:hash") == ("pdq", "known", "lists/k.csv", "hash")
    assert parse_spec("lists/a.txt") == (None, None, "lists/a.txt", None)
    assert parse_spec("url:u=a.txt") == ("url", "u", "a.txt", None)
    assert parse_spec("x.csv", column="md5") == (None, None, "x.csv", "md5")
