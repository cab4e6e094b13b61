"""Secrets on disk: reading `*_file` options, warning about files others can read, the umask.

Passwords and tokens reach smlogger in one of three ways; only flags are visible to every user
through `ps`, so the README recommends the config file (mode 0600/0640), the environment
(`EnvironmentFile=` under systemd) or a `*_file` option, and smlogger warns about the rest.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# Files smlogger creates (database, CSV, disk queue, capture) are readable by the owner only:
# meter readings show when someone is at home, and the spool may hold them for days.
DATA_UMASK = 0o077


class SecretFileError(ValueError):
    """A `*_file` option naming a file that cannot be read or holds no secret."""


def apply_umask() -> int:
    """Make every file and directory smlogger creates private to its user; the old umask.

    Bits already masked by the caller stay masked: a stricter umask is never loosened.
    """
    old = os.umask(DATA_UMASK)
    os.umask(old | DATA_UMASK)
    return old


def read_secret_file(path: Path) -> str:
    """The secret in `path`: its text without the trailing newline an editor or `echo` adds.

    SecretFileError (with the reason, but never the content) when the file cannot be read, is
    not UTF-8 or is empty.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SecretFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{path} is not UTF-8 text") from None
    # only line endings at the end are dropped; spaces may be part of a password
    secret = text.rstrip("\r\n")
    if not secret:
        raise SecretFileError(f"{path} is empty")
    if "\n" in secret:
        raise SecretFileError(f"{path} holds more than one line; put only the secret in it")
    return secret


def url_with_password(url: str, password: str) -> str:
    """`url` (user@host form) with `password` percent-encoded into it.

    ValueError when the URL has no user (SQLite, or a forgotten user name) or already carries a
    password (two sources for one secret would leave the reader guessing which one is used).
    """
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or not userinfo:
        raise ValueError(
            "database.url names no user to log in with; give it as "
            "mysql://USER@HOST/DB or postgresql://USER@HOST/DB"
        )
    if ":" in userinfo:
        raise ValueError(
            "database.url already contains a password; set the password either in the URL "
            "or in database.password_file, not in both"
        )
    netloc = f"{userinfo}:{quote(password, safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_password(url: str) -> str:
    """The password in a database URL (decoded), or "" when it has none."""
    if not url:
        return ""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


@dataclass(frozen=True)
class SecretFile:
    """A file that holds a secret, and which one (for the warning text)."""

    path: str
    holds: str  # e.g. "http.token" or "the password in database.url"


def exposure(path: Path, own_gid: int | None = None) -> str:
    """Who besides the owner may read `path`: "" (nobody), "its group" or "every user".

    Group access is fine when the group is the process's own group: the systemd install gives the
    config file to root:smlogger with mode 0640, so the service reads it but cannot change it.
    """
    try:
        info = path.stat()
    except OSError:
        return ""  # a file that vanished after loading exposes nothing any more
    if info.st_mode & stat.S_IROTH:
        return "every user"
    own = os.getegid() if own_gid is None else own_gid
    if info.st_mode & stat.S_IRGRP and info.st_gid != own:
        return "its group"
    return ""


def exposure_warnings(files: tuple[SecretFile, ...], own_gid: int | None = None) -> list[str]:
    """One warning per secret-holding file that others can read, with the command that fixes it."""
    warnings = []
    for item in files:
        path = Path(item.path)
        who = exposure(path, own_gid)
        if not who:
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        warnings.append(
            f"{item.path} holds {item.holds} and is readable by {who} (mode {mode:04o}); "
            f"run: chmod 0600 {item.path} (or chmod 0640 with the service's own group)"
        )
    return warnings
