"""Where the bus is and how to authenticate to it.

A bus is one Redis (``redis://``, ``rediss://``, ``unix://``) or a Redis
watched by Sentinel (``redis+sentinel://h1:26379,h2:26379/<service>/<db>``,
``rediss+sentinel://`` with TLS): then the parts ask the sentinels where the
master of ``<service>`` is, each time they connect, and follow a failover.
"""

import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: Schemes of a bus watched by Sentinel (the second with TLS, to the sentinels and to the data nodes alike).
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
SENTINEL_FORM = "redis+sentinel://host:port[,host:port...]/<service>/<db>"


@dataclass(frozen=True, slots=True)
class BusAddress:
    """A Redis address plus credentials: ``redis://``, ``rediss://`` (TLS), ``unix://``, or the sentinels of a
    service (``redis+sentinel://``; ``host``/``port`` are then unused: the sentinels say where the master is).

    ``wait_replicas`` > 0: the writes that matter (a command accepted, routed, a result) are confirmed only
    once that many replicas have them (Redis ``WAIT``, up to ``wait_timeout`` seconds), so that a failover
    cannot lose them."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    unix_path: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    wait_replicas: int = 0
    wait_timeout: float = 1.0

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> "BusAddress":
        """Parse ``url``; keyword arguments that are not ``None`` win over the URL."""
        scheme = urlsplit(url).scheme
        if scheme in SENTINEL_SCHEMES:
            address = _sentinel_address(url)
        elif scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"bus URL {url!r}: scheme must be redis://, rediss://, unix:// or "
                             f"redis+sentinel:// (rediss+sentinel://)")
        else:
            address = cls._from_redis_url(url)
        return replace(address, **{key: value for key, value in overrides.items() if value is not None})

    @classmethod
    def _from_redis_url(cls, url: str) -> "BusAddress":
        parsed = parse_url(url)
        return cls(
            host=parsed.get("host") or "127.0.0.1",
            port=int(parsed.get("port") or 6379),
            db=int(parsed.get("db") or 0),
            unix_path=parsed.get("path"),
            username=parsed.get("username"),
            password=parsed.get("password"),
            tls=parsed.get("connection_class") is SSLConnection,
            ca_file=parsed.get("ssl_ca_certs"),
            cert_file=parsed.get("ssl_certfile"),
            key_file=parsed.get("ssl_keyfile"),
        )

    def node(self, host: str, port: int) -> "BusAddress":
        """The data node at ``host:port`` (a master the sentinels named), with our credentials and TLS files."""
        return replace(self, host=host, port=port, sentinels=(), service="")

    def sentinel(self, host: str, port: int) -> "BusAddress":
        """One sentinel, as a plain address: its own credentials, our TLS files, no database."""
        return replace(self, host=host, port=port, sentinels=(), service="", db=0, username=self.sentinel_username,
                       password=self.sentinel_password)

    @property
    def url(self) -> str:
        """The address as a URL, without the password."""
        user = f"{self.username}@" if self.username else ""
        if self.sentinels:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"{'rediss' if self.tls else 'redis'}+sentinel://{user}{hosts}/{self.service}/{self.db}"
        if self.unix_path:
            return f"unix://{user}{self.unix_path}?db={self.db}"
        return f"{'rediss' if self.tls else 'redis'}://{user}{self.host}:{self.port}/{self.db}"

    @property
    def wait(self) -> tuple[str, int, int] | None:
        """The ``WAIT`` that confirms the writes that matter, or ``None`` when they are not waited for."""
        return ("WAIT", self.wait_replicas, max(1, round(self.wait_timeout * 1000))) if self.wait_replicas else None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a redis-py client (the synchronous ``acclient``); for a Sentinel address, of
        the connections to the master (``sentinel_kwargs`` has those to the sentinels)."""
        kwargs: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        if self.unix_path:
            kwargs.update(unix_socket_path=self.unix_path, connection_class=UnixDomainSocketConnection)
        elif not self.sentinels:
            kwargs.update(host=self.host, port=self.port)
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.ca_file, ssl_certfile=self.cert_file,
                          ssl_keyfile=self.key_file)
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of redis-py's connections to the sentinels."""
        return {key: value for key, value in self.sentinel(*self.sentinels[0]).redis_kwargs().items()
                if key not in ("host", "port", "db")}


def _sentinel_address(url: str) -> BusAddress:
    """``redis+sentinel://[user[:password]@]h1:p1,h2:p2/<service>/<db>``: the credentials are the data nodes'."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"bus URL {url!r}: a Sentinel URL takes no ?query: give the credentials and TLS files "
                         "in the security table (or as options)")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), str(SENTINEL_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bus URL {url!r}: {item.strip()!r} is not a sentinel host:port ({SENTINEL_FORM})")
        sentinels.append((host.strip("[]"), int(port)))
    path = [piece for piece in parts.path.split("/") if piece]
    if not path:
        raise ValueError(f"bus URL {url!r}: no service name: give {SENTINEL_FORM}")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"bus URL {url!r}: after the sentinels comes /<service>/<db> (db a number), "
                         f"got {parts.path!r}")
    return BusAddress(db=int(path[1]) if len(path) == 2 else 0, username=unquote(username) or None,
                      password=unquote(password) if password else None, tls=parts.scheme == "rediss+sentinel",
                      sentinels=tuple(sentinels), service=unquote(path[0]))
