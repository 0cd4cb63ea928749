"""Credentials inside URLs never reach the screen or a stored file.

A tracking URI or storage path such as ``https://alice:pw@mlflow:5000`` or ``s3://KEY:SECRET@bucket``
is printed and stored (config.yaml, run_info.json, metrics.json, MLflow params, `vidpeft submit`'s
command line) as ``https://alice:***@mlflow:5000``; a token used as the user part
(``https://TOKEN@host``) and secret-looking query parameters (``?access_token=...``) are masked too.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
# scheme://userinfo@ : userinfo is "user:password" or a bare token
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/:@\s'\"]*)(?::(?P<pw>[^@/\s'\"]*))?@")
_QUERY = re.compile(r"(?P<sep>[?&;])(?P<key>[A-Za-z0-9_.-]+)=(?P<value>[^&#\s'\"]*)")
SECRET_WORDS = ("token", "secret", "password", "passwd", "credential", "apikey", "api_key", "private_key")


def looks_secret(name: str) -> bool:
    last = name.rsplit(".", 1)[-1].lower().replace("-", "_")
    if last.endswith(("_path", "_file", "_dir")):  # where a secret lives, not the secret
        return False
    return any(w in last for w in SECRET_WORDS) or last == "key" or last.endswith("_key")


def _userinfo(m: re.Match) -> str:
    if m.group("pw") is not None:
        return f"{m.group('scheme')}{m.group('user')}:{REDACTED}@"
    return f"{m.group('scheme')}{REDACTED}@" if m.group("user") else m.group(0)


def _query(m: re.Match) -> str:
    if looks_secret(m.group("key")) or m.group("key").lower() in ("sig", "signature", "password", "pwd"):
        return f"{m.group('sep')}{m.group('key')}={REDACTED}"
    return m.group(0)


def redact_urls(text: str) -> str:
    """``text`` with every URL's credentials masked (other text unchanged)."""
    if "://" not in text:
        return text
    return _QUERY.sub(_query, _USERINFO.sub(_userinfo, text))


def redact_data(obj: Any) -> Any:
    """Plain data (dicts, lists, strings) with every string's URL credentials masked."""
    if isinstance(obj, str):
        return redact_urls(obj)
    if isinstance(obj, dict):
        return {k: redact_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_data(v) for v in obj]
    return obj
