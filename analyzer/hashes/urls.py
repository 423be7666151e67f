"""URL normalisation for URL hash lists (and the URL hash written to escalation packages).

Two spellings of one resource must give one hash, so URLs are normalised before hashing. The rules,
applied in this order, are part of the tool's contract (a list provider can reproduce them to publish
hashes we match; ``analyzer.hashes.urls.normalize_url`` is the reference):

1. Strip surrounding whitespace. A URL without ``://`` gets ``http://`` in front (``//host/x`` gets
   ``http:``), so scheme-less list entries such as ``example.com/a.jpg`` work.
2. Scheme: lowercased; ``https`` is folded into ``http`` (the same host and path over TLS or not is the
   same resource for a known-content list).
3. Authority: user-info (``user:pass@``) is dropped; the host is lowercased, a trailing dot removed,
   internationalised names converted to IDNA/punycode, any character still not allowed in a host
   percent-encoded (escapes in upper-case hex); the port is dropped when it is the default for
   the original scheme (80 for http, 443 for https), kept otherwise.
4. Path and query: percent-escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded, other
   escapes get upper-case hex, characters that are not allowed in a URL (spaces, non-ASCII, ...) are
   percent-encoded from UTF-8, a stray ``%`` becomes ``%25``; ``\\`` in the path becomes ``/``; dot
   segments (``/./``, ``/../``) are resolved (RFC 3986 section 5.2.4).
5. Trailing-slash policy: an empty path becomes ``/``; a trailing ``/`` on any longer path is removed
   (``/a/`` and ``/a`` hash the same).
6. The query is kept in its order (an empty ``?`` is dropped); the fragment (``#...``) is dropped.

The normalised form is ``scheme://host[:port]path[?query]``; the URL hash is the hex digest (md5 unless
the list says otherwise) of its UTF-8 bytes.
"""
from __future__ import annotations

import hashlib
import re
import string

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_SUB_DELIMS = frozenset("!$&'()*+,;=")
_PATH_OK = _UNRESERVED | _SUB_DELIMS | frozenset(":@/")
_QUERY_OK = _PATH_OK | frozenset("?")
_HOST_OK = _UNRESERVED | _SUB_DELIMS
_ESCAPE_RE = re.compile(r"%[0-9a-f]{2}")
_IPV6_RE = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_HEX = frozenset("0123456789abcdefABCDEF")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ftp": "21"}


def _norm_component(text: str, allowed: frozenset) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and i + 2 < n and text[i + 1] in _HEX and text[i + 2] in _HEX:
            code = int(text[i + 1:i + 3], 16)
            decoded = chr(code)
            out.append(decoded if decoded in _UNRESERVED else f"%{code:02X}")
            i += 3
            continue
        if ch in allowed:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4."""
    inp, out = path, []
    while inp:
        if inp.startswith("../"):
            inp = inp[3:]
        elif inp.startswith("./"):
            inp = inp[2:]
        elif inp.startswith("/./"):
            inp = "/" + inp[3:]
        elif inp == "/.":
            inp = "/"
        elif inp.startswith("/../"):
            inp = "/" + inp[4:]
            if out:
                out.pop()
        elif inp == "/..":
            inp = "/"
            if out:
                out.pop()
        elif inp in (".", ".."):
            inp = ""
        else:
            start = 1 if inp.startswith("/") else 0
            cut = inp.find("/", start)
            cut = len(inp) if cut < 0 else cut
            out.append(inp[:cut])
            inp = inp[cut:]
    return "".join(out)


def _norm_host(host: str) -> str:
    host = host.strip()
    if _IPV6_RE.match(host):  # IPv6 literal
        return host.lower()
    if any(ord(c) > 127 for c in host):
        try:
            host = host.lower().encode("idna").decode("ascii")
        except UnicodeError:
            pass
    # whatever cannot stand in a host name is percent-encoded (upper-case hex), so the result is stable
    host = _norm_component(host, _HOST_OK).lower()
    return _ESCAPE_RE.sub(lambda m: m.group(0).upper(), host).rstrip(".")


def normalize_url(url: str | None) -> str | None:
    """The normalised form of ``url`` (rules in the module docstring); ``None`` for null/empty input.

    Total: never raises for a string; an unparseable authority is kept lower-cased as it is.
    """
    if url is None:
        return None
    url = str(url).strip()
    if not url:
        return None
    if url.startswith("//"):
        url = "http:" + url
    elif "://" not in url:
        url = "http://" + url
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    rest = rest.split("#", 1)[0]
    # authority ends at the first '/', '?' or '\'
    cut = len(rest)
    for sep in ("/", "?", "\\"):
        pos = rest.find(sep)
        if 0 <= pos < cut:
            cut = pos
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    host, port = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        if end >= 0:
            host, after = authority[:end + 1], authority[end + 1:]
            port = after[1:] if after.startswith(":") else ""
    elif ":" in authority:
        host, port = authority.rsplit(":", 1)
    port = port.strip()
    if port and not (port.isascii() and port.isdigit()):
        host, port = authority, ""  # not a port: keep it in the host, where ':' gets percent-encoded
    host = _norm_host(host)
    if port:
        port = str(int(port))
    if port == _DEFAULT_PORTS.get(scheme) or port == "":
        port = ""
    if scheme == "https":
        scheme = "http"
    if "?" in tail:
        path, query = tail.split("?", 1)
    else:
        path, query = tail, ""
    path = path.replace("\\", "/")
    path = _remove_dot_segments(_norm_component(path, _PATH_OK)) or "/"
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    query = _norm_component(query, _QUERY_OK)
    return f"{scheme}://{host}{':' + port if port else ''}{path}{'?' + query if query else ''}"


def url_digest(url: str | None, algo: str = "md5") -> str | None:
    """Hex digest (``md5``/``sha1``/``sha256``) of the normalised URL; ``None`` for null/empty URLs."""
    norm = normalize_url(url)
    if norm is None:
        return None
    return hashlib.new(algo, norm.encode("utf-8", "surrogatepass")).hexdigest()


def url_host(url: str | None) -> str | None:
    """The normalised host of ``url`` (for source references); ``None`` for null/empty URLs."""
    norm = normalize_url(url)
    if norm is None:
        return None
    host = norm.split("://", 1)[1]
    host = host.split("/", 1)[0].split("?", 1)[0]
    if not host.startswith("[") and ":" in host:
        host = host.rsplit(":", 1)[0]
    return host or None
