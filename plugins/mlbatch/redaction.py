"""Keep credentials out of every log line and error message mlbatch writes.

Two layers:

- :func:`register` hands secret values to Airflow's secrets masker, which replaces them with
  ``***`` in every log line of the process (and, from a task, of its supervisor) from then on.
  Tasks register the values of secret-looking environment variables when they start
  (:func:`register_environment`) and of each connection they use (:func:`connection_secrets`):
  its password, the path and query of a URL kept in ``host`` (webhook URLs carry their token in
  the path: Slack's ``/services/T…/B…/<token>``), and the values of secret-looking extras and
  headers. Airflow masks a connection's password and sensitive extras itself, never its host.
- :func:`redact` cleans a text we are about to log or raise: the given secrets, passwords in
  URLs (``scheme://user:pass@``) and credential-like query parameters (``?token=``,
  ``X-Amz-Signature=``), whether or not a masker runs (the CLI has none).

Imported at DAG parse time (by the failure callback): standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.sdk import Connection

MASK = "***"
# Names that say "credential": their values are secrets (also used to refuse them in job envs).
SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE_KEY|API_KEY|AUTHORIZATION|KEYFILE|SQL_ALCHEMY_CONN",
    re.IGNORECASE,
)
MIN_SECRET_LEN = 6  # shorter values ("", "1", "test") would mask ordinary words
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"]+:)(?P<pw>[^\s@/'\"]+)(?P<at>@)")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&](?:[A-Za-z0-9_\-]*(?:token|secret|signature|password|passwd|key|sig|credential|auth)"
    r"[A-Za-z0-9_\-]*)=)(?P<value>[^&\s'\"#]+)",
    re.IGNORECASE,
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets, URL passwords and credential query parameters masked."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['name']}{MASK}", text)


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that can hold a credential: password, path, query (the host stays visible)."""
    try:
        parts = urlsplit(url if "://" in url else f"https://{url}")
    except ValueError:
        return [url]
    found = [parts.password or ""]
    if parts.path not in ("", "/"):
        found.append(parts.path)
        found.append(parts.path.lstrip("/"))
    if parts.query:
        found.append(parts.query)
    return [s for s in found if len(s) >= MIN_SECRET_LEN]


def _secret_values(extra: Any, key: str = "") -> list[str]:
    """String values of an extra (nested dicts: headers, keyfile_dict) under secret-looking keys."""
    if isinstance(extra, Mapping):
        return [v for k, item in extra.items() for v in _secret_values(item, f"{key}.{k}")]
    if isinstance(extra, list):
        return [v for item in extra for v in _secret_values(item, key)]
    if isinstance(extra, str) and SECRET_NAME.search(key) and len(extra) >= MIN_SECRET_LEN:
        return [extra, *[line for line in extra.splitlines() if len(line) >= MIN_SECRET_LEN]]
    return []


def connection_secrets(conn: Connection) -> list[str]:
    """What must never be logged of an Airflow connection."""
    found = [getattr(conn, "password", None) or ""]
    host = getattr(conn, "host", None) or ""
    found += url_secrets(host) if ("/" in host or "?" in host) else []
    try:
        extra = conn.extra_dejson
    except Exception:  # an extra that is not JSON: mask it whole
        extra = {"extra": getattr(conn, "extra", "") or ""}
    found += _secret_values(extra)
    return [s for s in found if len(s) >= MIN_SECRET_LEN]


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they hold a credential."""
    env = os.environ if environ is None else environ
    found = []
    for name, value in env.items():
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LEN:
            found.append(value)
            if "://" in value:  # a URL such as a DB connection string: its password alone too
                try:
                    password = urlsplit(value).password
                except ValueError:
                    password = None
                if password and len(password) >= MIN_SECRET_LEN:
                    found.append(password)
    return found


def register(secrets: Iterable[str]) -> None:
    """Hand secrets to Airflow's masker (a no-op outside Airflow)."""
    try:
        # Airflow's secrets masker: loaded only where a secret is registered (the CLI and jobs start without Airflow).
        from airflow.sdk.log import mask_secret
    except Exception:  # the CLI without Airflow's logging set up: redact() still applies
        return
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LEN:
            mask_secret(secret)


def register_environment() -> None:
    register(environment_secrets())
