"""Aurora MySQL's ``LOAD DATA FROM S3`` in front of MariaDB, at the MySQL wire.

MariaDB has no ``LOAD DATA FROM S3``: Aurora reads the object itself, from the cluster's IAM
role. This proxy sits between the client (PyMySQL in a worker, in any process) and MariaDB and
plays that part of Aurora:

- a ``COM_QUERY`` of ``LOAD DATA FROM S3 FILE 's3://bucket/key' INTO TABLE ...`` is rewritten to
  ``LOAD DATA LOCAL INFILE 's3://bucket/key' INTO TABLE ...``;
- MariaDB then asks the client for that "file" (the protocol's LOCAL INFILE request); the proxy
  answers instead of the client, streaming the object from S3 (boto3 at ``s3_endpoint``), and
  hands the client the server's final OK or error as the direct answer to its query;
- Aurora MySQL 3 grants the load through a role (``AWS_LOAD_S3_ACCESS``) that is active only after
  ``SET ROLE`` (or with ``activate_all_roles_on_login``): with ``required_role`` set, a load in a
  session that has not run ``SET ROLE <that role>`` (or ``SET ROLE ALL``) is refused with an
  access-denied error, as Aurora refuses it.

Everything else passes through byte for byte, so the client sees MariaDB's real answers. The
client's capability flags get ``CLIENT_LOCAL_FILES`` so that MariaDB asks for the file even when
the session was opened without ``local_infile`` (Aurora's FROM S3 needs no client file access).
Only plain TCP (no TLS) and packets under 16 MiB on the client's side are handled: enough for
the tests' sessions, not a general proxy.
"""

from __future__ import annotations

import atexit
import logging
import re
import socket
import struct
import threading
from dataclasses import dataclass, field

from devtools.devservers._base import free_port

log = logging.getLogger(__name__)

CLIENT_LOCAL_FILES = 0x00000080
COM_QUERY = 0x03
LOCAL_INFILE_REQUEST = 0xFB
CHUNK = 1 << 20  # bytes of the object per packet sent to the server

_FROM_S3 = re.compile(rb"^\s*LOAD\s+DATA\s+FROM\s+S3\s+(?:FILE\s+)?'([^']+)'", re.IGNORECASE)
_SET_ROLE = re.compile(rb"^\s*SET\s+ROLE\s+[`'\"]?([A-Za-z0-9_]+)", re.IGNORECASE)
# Aurora answers ER_SPECIFIC_ACCESS_DENIED_ERROR (1227) when the load privilege is not active.
DENIED_CODE = 1227


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    header = _read_exact(sock, 4)
    length = header[0] | header[1] << 8 | header[2] << 16
    return header[3], _read_exact(sock, length)


def packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def error_packet(seq: int, code: int, message: str, state: str = "42000") -> bytes:
    return packet(seq, b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + message.encode())


@dataclass
class _Session:
    client: socket.socket
    server: socket.socket
    proxy: AuroraS3Proxy
    pending: str | None = None  # the S3 URI of a FROM S3 load in flight
    roles: set[str] = field(default_factory=set)
    handshake_seen: bool = False

    def run(self) -> None:
        up = threading.Thread(target=self._client_to_server, daemon=True)
        up.start()
        try:
            self._server_to_client()
        except (ConnectionError, OSError):
            pass
        finally:
            for s in (self.client, self.server):
                try:
                    s.close()
                except OSError:
                    pass

    def _client_to_server(self) -> None:
        try:
            while True:
                seq, payload = read_packet(self.client)
                if not self.handshake_seen:
                    payload = self._with_local_files(payload)
                    self.handshake_seen = True
                elif seq == 0 and payload[:1] == bytes([COM_QUERY]):
                    payload = self._query(payload)
                    if payload is None:
                        continue
                self.server.sendall(packet(seq, payload))
        except (ConnectionError, OSError):
            for s in (self.client, self.server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _with_local_files(payload: bytes) -> bytes:
        (flags,) = struct.unpack("<I", payload[:4])
        return struct.pack("<I", flags | CLIENT_LOCAL_FILES) + payload[4:]

    def _query(self, payload: bytes) -> bytes | None:
        sql = payload[1:]
        role = _SET_ROLE.match(sql)
        if role:
            self.roles.add(role.group(1).decode().upper())
        load = _FROM_S3.match(sql)
        if not load:
            return payload
        uri = load.group(1).decode()
        if not self.proxy.role_active(self.roles):
            self.proxy.refused.append(uri)
            self.client.sendall(
                error_packet(
                    1,
                    DENIED_CODE,
                    f"Access denied; you need (at least one of) the {self.proxy.required_role} privilege(s) "
                    "for this operation (the role is granted but not active in this session)",
                )
            )
            return None
        self.pending = uri
        return payload[:1] + _FROM_S3.sub(b"LOAD DATA LOCAL INFILE '\\1'", sql, 1)

    def _server_to_client(self) -> None:
        while True:
            seq, payload = read_packet(self.server)
            if self.pending is not None and seq == 1 and payload[:1] == bytes([LOCAL_INFILE_REQUEST]):
                failure = self._send_object(self.pending)
                _, answer = read_packet(self.server)  # the server's OK or error for the load
                self.pending = None
                # The client never saw the file exchange: the server's answer (or Aurora's error
                # for an object it could not read: 0 rows were loaded) answers its query.
                self.client.sendall(error_packet(1, 1105, failure, "HY000") if failure else packet(1, answer))
                continue
            if self.pending is not None and seq == 1:
                self.pending = None  # the server answered the load at once (e.g. an error)
            self.client.sendall(packet(seq, payload))

    def _send_object(self, uri: str) -> str | None:
        """Stream the object to the server as the LOCAL INFILE's content; the error, if any."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        seq, failure = 2, None
        try:
            body = self.proxy.s3().get_object(Bucket=bucket, Key=key)["Body"]
            while chunk := body.read(CHUNK):
                self.server.sendall(packet(seq, chunk))
                seq += 1
        except Exception as exc:  # noqa: BLE001 - the empty packet below ends the load either way
            failure = f"LOAD DATA FROM S3 could not read {uri}: {exc}"
        else:
            self.proxy.loaded.append(uri)
        self.server.sendall(packet(seq, b""))
        return failure


class AuroraS3Proxy:
    """A TCP proxy on 127.0.0.1 in front of MariaDB that serves ``LOAD DATA FROM S3``."""

    def __init__(
        self,
        mariadb_port: int,
        s3_endpoint: str,
        *,
        required_role: str | None = None,
        activate_all_roles_on_login: bool = False,
        region: str = "us-east-1",
    ):
        self.mariadb_port = mariadb_port
        self.s3_endpoint, self.region = s3_endpoint, region
        self.required_role = required_role
        self.activate_all_roles_on_login = activate_all_roles_on_login
        self.port = free_port()
        self.loaded: list[str] = []  # URIs served to a load, in order
        self.refused: list[str] = []  # URIs of loads refused for want of the active role
        self._listener: socket.socket | None = None
        self._client = None

    def s3(self):  # noqa: ANN201 - a boto3 client
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=self.s3_endpoint,
                region_name=self.region,
                aws_access_key_id="aurora-cluster-role",
                aws_secret_access_key="aurora-cluster-role",  # noqa: S106 - the S3 double accepts any
            )
        return self._client

    def role_active(self, session_roles: set[str]) -> bool:
        if self.required_role is None or self.activate_all_roles_on_login:
            return True
        return bool({self.required_role.upper(), "ALL"} & session_roles)

    def start(self) -> AuroraS3Proxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, name=f"aurora-proxy:{self.port}", daemon=True).start()
        atexit.register(self.stop)
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.mariadb_port))
            session = _Session(client, server, self)
            threading.Thread(target=session.run, daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
