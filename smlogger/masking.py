"""Hiding secrets in text meant for people: the one URL-masking function of the project."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def mask_url(url: str) -> str:
    """`url` with its password replaced by ***; host, port and everything else as written.

    The network location is cut at its last "@" (as `urlsplit` does) and only the text after the
    user name's ":" is replaced, so IPv6 hosts keep their brackets (``mysql://u:***@[::1]:3306/db``)
    and an odd port does not raise. Text that is not a URL at all comes back as *** entirely.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:{MASK}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
