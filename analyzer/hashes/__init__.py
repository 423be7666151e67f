"""Known-hash lists and matching: exact (md5/sha1/sha256 of the bytes), URL and perceptual (PDQ) hashes.

lists.py reads list files, urls.py normalises URLs, pdq.py computes PDQ hashes and searches them, matching.py
(``HashMatcher``) matches items against the lists.
"""
from analyzer.hashes.lists import HashList, HashLists, load_hash_list, load_hash_lists
from analyzer.hashes.matching import HashMatcher, item_hashes
from analyzer.hashes.urls import normalize_url, url_digest, url_host

__all__ = ["HashList", "HashLists", "HashMatcher", "item_hashes", "load_hash_list", "load_hash_lists",
           "normalize_url", "url_digest", "url_host"]
