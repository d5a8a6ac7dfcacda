"""The app database's credentials from an Airflow connection (``MLBATCH_APPDB_CONN_ID``).

The connection's type picks the backend (:data:`CONN_TYPES`): ``mysql`` (also ``aurora``,
``mariadb``; the default when unset) for Aurora MySQL, ``postgres`` (also ``postgresql``) for
Aurora PostgreSQL. Either way: host, port, schema (the database), login, password.

A MySQL connection's extras choose TLS and IAM authentication, under the MySQL provider's names or
PyMySQL's own:

=========================================  =====================================================
extra                                      effect (PyMySQL connect argument)
=========================================  =====================================================
``ssl_ca``, ``ssl_cert``, ``ssl_key``      TLS with that CA bundle / client certificate
``ssl_verify_cert``, ``ssl_verify_identity``  check the server certificate / its host name
``ssl_disabled``                           no TLS at all
``ssl`` (provider: dict or JSON)           ``ca``, ``cert``, ``key``, ``check_hostname``
``ssl_mode`` (provider)                    ``DISABLED``, ``PREFERRED``, ``REQUIRED`` (TLS, no
                                           certificate check), ``VERIFY_CA``, ``VERIFY_IDENTITY``
``iam`` (provider)                         ``true``: the password is an RDS IAM token made per
                                           connection with ``rds.generate_db_auth_token``
``aws_conn_id`` (provider), ``region_name``  the AWS connection (and region) making that token
``charset``                                default ``utf8mb4``
``aurora_load_role``                       Aurora MySQL 3: the role that grants ``LOAD DATA FROM
                                           S3`` (``AWS_LOAD_S3_ACCESS``), activated with ``SET
                                           ROLE`` in each load session (default: env
                                           ``MLBATCH_AURORA_LOAD_ROLE``, else none)
=========================================  =====================================================

Aurora MySQL 3 grants ``LOAD DATA FROM S3`` through a role, and a granted role is not active in a
session until ``SET ROLE``: with ``MLBATCH_AURORA_LOAD_FROM_S3=1``, set ``aurora_load_role`` (or
``MLBATCH_AURORA_LOAD_ROLE``) to it, or set the cluster parameter ``activate_all_roles_on_login``
to 1. Without either the load is refused, with an error that says so.

A PostgreSQL connection's extras, under the Postgres provider's (and libpq's) names:

=========================================  =====================================================
extra                                      effect (psycopg2 connect argument)
=========================================  =====================================================
``sslmode``                                ``disable`` ... ``require`` (TLS, no certificate
                                           check), ``verify-ca``, ``verify-full``
``sslrootcert``, ``sslcert``, ``sslkey``   the CA bundle / client certificate
``sslcrl``, ``connect_timeout``            passed as they are
``iam``, ``aws_conn_id``, ``region_name``  as for MySQL: an RDS IAM token per connection (needs
                                           ``sslrootcert`` and ``sslmode`` ``verify-full``,
                                           ``verify-ca`` or ``require``)
=========================================  =====================================================

Neither ``apache-airflow-providers-mysql`` (it builds mysqlclient from C) nor the Postgres provider
is a dependency: the connection is read with :meth:`airflow.sdk.BaseHook.get_connection`, which
also reads ``AIRFLOW_CONN_<ID>`` variables, and the drivers are PyMySQL and psycopg2.

The password never enters the URL: it is handed to the driver on each connect by a
:class:`PasswordSource`, so the URL, the hook's repr and every log line stay free of it.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import URL

from mlbatch.errors import UsageError

# The MySQL provider's ssl_mode values, as PyMySQL arguments.
# Aurora MySQL 3: the role that grants LOAD DATA FROM S3 (the connection extra aurora_load_role, else this).
LOAD_ROLE_ENV = "MLBATCH_AURORA_LOAD_ROLE"

_SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
_PROVIDER_SSL_KEYS = {"ca": "ssl_ca", "cert": "ssl_cert", "key": "ssl_key", "check_hostname": "ssl_verify_identity"}
_FLAT_SSL = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert", "ssl_verify_identity", "ssl_disabled")
_BOOL_SSL = ("ssl_verify_cert", "ssl_verify_identity", "ssl_disabled")


class AppDbConnectionError(UsageError, ValueError):
    """The Airflow connection cannot describe an app database; the message names it and the field."""


@dataclass(frozen=True)
class IamToken:
    """An RDS IAM auth token for each new connection (tokens live 15 minutes; pooled connections
    outlive them, which is fine: the token is checked only when connecting)."""

    host: str
    port: int
    user: str
    aws_conn_id: str
    region: str | None = None

    def __call__(self) -> str:
        # Airflow's connection API (about 2 s to import): only an app DB given as a connection id needs it.
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        hook = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="rds", region_name=self.region)
        token: str = hook.conn.generate_db_auth_token(DBHostname=self.host, Port=self.port, DBUsername=self.user)
        return token

    def __repr__(self) -> str:
        return f"IamToken({self.user}@{self.host}:{self.port} via {self.aws_conn_id!r})"


@dataclass(frozen=True)
class StaticPassword:
    value: str = field(repr=False)

    def __call__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "StaticPassword(***)"


PasswordSource = IamToken | StaticPassword


@dataclass(frozen=True)
class AppDbSettings:
    """What the hook needs: a password-free URL, the driver's arguments, and where the password comes from."""

    url: URL
    connect_args: dict[str, Any]
    password: PasswordSource | None
    source: str  # for messages: "Airflow connection 'x'" or "MLBATCH_APPDB_URL"
    load_role: str | None = None  # extra aurora_load_role: SET ROLE before LOAD DATA FROM S3


def from_connection(conn_id: str) -> AppDbSettings:
    """Read the Airflow connection ``conn_id`` (or ``AIRFLOW_CONN_<ID>``) into :class:`AppDbSettings`."""
    # Airflow's connection API (about 2 s to import): only an app DB given as a connection id needs it.
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and secrets-backend errors alike
        raise AppDbConnectionError(
            f"MLBATCH_APPDB_CONN_ID={conn_id!r}: the Airflow connection cannot be read ({type(exc).__name__}: {exc}); "
            "create it (type mysql or postgres: host, port, schema, login, password) or set AIRFLOW_CONN_"
            f"{conn_id.upper()}"
        ) from None
    return settings_for(
        conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
        login=conn.login,
        password=conn.password,
        extra=conn.extra_dejson,
    )


@dataclass(frozen=True)
class ConnType:
    """How one kind of Airflow connection describes the app DB: the SQLAlchemy driver, the
    default port, the driver's arguments from the extras, and whether those verify the server's
    certificate against a CA bundle (what an IAM token needs: the servers refuse one in clear)."""

    drivername: str
    port: int
    driver_args: Callable[[dict[str, Any], str], dict[str, Any]]
    verified_tls: Callable[[dict[str, Any]], bool]
    tls_fix: str  # what to set when IAM is asked for without verified TLS


def settings_for(
    conn_id: str,
    *,
    conn_type: str | None,
    host: str | None,
    port: int | None,
    schema: str | None,
    login: str | None,
    password: str | None,
    extra: dict[str, Any],
) -> AppDbSettings:
    where = f"Airflow connection {conn_id!r}"
    kind = CONN_TYPES.get(conn_type or "mysql")
    if kind is None:
        raise AppDbConnectionError(
            f"{where}: conn_type {conn_type!r} is not mysql (Aurora MySQL, MariaDB; also aurora, mariadb) "
            "or postgres (Aurora PostgreSQL; also postgresql)"
        )
    missing = [name for name, value in (("host", host), ("schema", schema), ("login", login)) if not value]
    if missing:
        raise AppDbConnectionError(f"{where}: {', '.join(missing)} missing (the app DB's host, database and user)")
    args = kind.driver_args(extra, where)
    source: PasswordSource | None
    if _truthy(extra.get("iam", False)):
        if not kind.verified_tls(args):
            raise AppDbConnectionError(
                f"{where}: extra iam=true needs TLS with the RDS CA bundle: {kind.tls_fix} "
                "(https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem); Aurora refuses IAM tokens "
                "over plain connections"
            )
        aws = extra.get("aws_conn_id") or os.environ.get("MLBATCH_AWS_CONN_ID") or "aws_default"
        source = IamToken(str(host), int(port or kind.port), str(login), str(aws), extra.get("region_name"))
    else:
        source = StaticPassword(password) if password else None
    url = URL.create(kind.drivername, username=login, host=host, port=port or kind.port, database=schema)
    role = str(extra.get("aurora_load_role") or "").strip() or None
    return AppDbSettings(url=url, connect_args=args, password=source, source=where, load_role=role)


def _mysql_args(extra: dict[str, Any], where: str) -> dict[str, Any]:
    return {"charset": str(extra.get("charset") or "utf8mb4"), **tls_args(extra, where)}


def _mysql_verified(args: dict[str, Any]) -> bool:
    return not args.get("ssl_disabled") and any(k in args for k in ("ssl_ca", "ssl"))


_PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PG_PASSED = ("sslrootcert", "sslcert", "sslkey", "sslcrl", "connect_timeout")


def _postgres_args(extra: dict[str, Any], where: str) -> dict[str, Any]:
    """psycopg2's (libpq's) arguments from a Postgres connection's extras."""
    args = {name: str(extra[name]) for name in _PG_PASSED if extra.get(name) not in (None, "")}
    mode = str(extra.get("sslmode") or "").strip().lower()
    if mode:
        if mode not in _PG_SSLMODES:
            raise AppDbConnectionError(f"{where}: extra sslmode {mode!r} is not one of {', '.join(_PG_SSLMODES)}")
        args["sslmode"] = mode
    return args


def _postgres_verified(args: dict[str, Any]) -> bool:
    return "sslrootcert" in args and args.get("sslmode") in ("require", "verify-ca", "verify-full")


_MYSQL = ConnType("mysql+pymysql", 3306, _mysql_args, _mysql_verified, "set extra ssl_ca to its path")
_POSTGRES = ConnType(
    "postgresql+psycopg2",
    5432,
    _postgres_args,
    _postgres_verified,
    "set extra sslrootcert to its path and sslmode to verify-full",
)
# The Airflow connection's conn_type -> how it describes the app DB (unset: MySQL, as before
# PostgreSQL was offered).
CONN_TYPES: dict[str, ConnType] = {
    "mysql": _MYSQL,
    "aurora": _MYSQL,
    "mariadb": _MYSQL,
    "postgres": _POSTGRES,
    "postgresql": _POSTGRES,
}


def tls_args(extra: dict[str, Any], where: str) -> dict[str, Any]:
    """PyMySQL's TLS arguments from a connection's extras (flat names win over ``ssl``/``ssl_mode``)."""
    args = _provider_ssl_args(extra.get("ssl"), where) | _ssl_mode_args(extra.get("ssl_mode"), where)
    for name in _FLAT_SSL:
        if name in extra:
            args[name] = _truthy(extra[name]) if name in _BOOL_SSL else str(extra[name])
    return {k: v for k, v in args.items() if v is not None}


def _provider_ssl_args(provider_ssl: Any, where: str) -> dict[str, Any]:
    """The MySQL provider's ``ssl`` extra (a dict, or a JSON object in a string) as PyMySQL args."""
    if isinstance(provider_ssl, str) and provider_ssl.strip():
        try:
            provider_ssl = json.loads(provider_ssl)
        except json.JSONDecodeError:
            raise AppDbConnectionError(f"{where}: extra ssl is not a JSON object: {provider_ssl[:40]!r}") from None
    if not isinstance(provider_ssl, dict):
        return {}
    unknown = sorted(set(provider_ssl) - set(_PROVIDER_SSL_KEYS))
    if unknown:
        raise AppDbConnectionError(f"{where}: extra ssl has {unknown}; known: {sorted(_PROVIDER_SSL_KEYS)}")
    args = {_PROVIDER_SSL_KEYS[k]: v for k, v in provider_ssl.items()}
    if "check_hostname" in provider_ssl:
        args["ssl_verify_identity"] = _truthy(provider_ssl["check_hostname"])
    return args


def _ssl_mode_args(mode: Any, where: str) -> dict[str, Any]:
    """MySQL's ``ssl_mode`` names as PyMySQL args."""
    if not mode:
        return {}
    mode = str(mode).upper()
    if mode not in _SSL_MODES:
        raise AppDbConnectionError(f"{where}: extra ssl_mode {mode!r} is not one of {', '.join(_SSL_MODES)}")
    if mode == "DISABLED":
        return {"ssl_disabled": True}
    if mode == "REQUIRED":
        # TLS without a certificate check: PyMySQL needs a context for "encrypt but don't verify".
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return {"ssl": ctx}
    if mode in ("VERIFY_CA", "VERIFY_IDENTITY"):
        return {"ssl_verify_cert": True, "ssl_verify_identity": mode == "VERIFY_IDENTITY"}
    return {}  # PREFERRED: PyMySQL's default


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")
