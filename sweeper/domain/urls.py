"""Store URLs as users type them: checked before use, and never shown with their password."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from sweeper.domain.errors import UsageError

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<password>.*)@(?P<rest>[^@]*)$")


def mask(url: str | None) -> str | None:
    """The URL with its password replaced by ***, e.g. postgresql://me:***@db:5432/sweeps."""
    if not url:
        return url
    found = _USERINFO.match(url)
    if not found:
        return url
    return f"{found['scheme']}{found['user']}:***@{found['rest']}"


def check_url(url: str | None, option: str) -> str | None:
    """Refuse what SQLAlchemy and MLflow would misread, naming the option and what is expected; an SQLite file
    given by URL must lie in a folder that exists (sweeper creates only its own ./mlruns)."""
    if url and "://" not in url and option == "--tracking-uri":
        raise UsageError(f"--tracking-uri {url} is not a tracking URI; expected http://HOST:PORT (an MLflow "
                         f"server), sqlite:///PATH or postgresql://..., or leave it out for the embedded store")
    if not url or "://" not in url:
        return url
    if "{" in url or "}" in url:
        raise UsageError(f"{option} {mask(url)} contains {{ or }}; percent-encode them in the password "
                         f"({{ as %7B, }} as %7D), as every special character (@ : / %) must be")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise UsageError(f"{option} {mask(url)} is not a valid URL ({exc}); a password with @ : / % must be "
                         f"percent-encoded (@ as %40, : as %3A, / as %2F, % as %25)") from None
    _check_sqlite_folder(url, option)
    return url


def _check_sqlite_folder(url: str, option: str) -> None:
    if not url.startswith("sqlite:///") or url.startswith("sqlite:///:memory:"):
        return
    folder = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).parent
    if not folder.is_dir():
        raise UsageError(f"{option} {mask(url)}: the folder {folder} does not exist; create it first, or choose "
                         f"a file in an existing folder")


def scrub(text: str, *urls: str | None) -> str:
    """`text` (e.g. a driver's error message) with the passwords of `urls` replaced by ***."""
    from urllib.parse import unquote

    for url in urls:
        found = _USERINFO.match(url or "")
        if found and found["password"]:
            for secret in {found["password"], unquote(found["password"])}:
                text = text.replace(secret, "***")
    return text
