"""Where the bus is and how to authenticate to it."""

import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

DEFAULT_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class BusAddress:
    """A Redis address plus credentials: ``redis://``, ``rediss://`` (TLS) or ``unix://``."""

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

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> "BusAddress":
        """Parse ``url``; keyword arguments that are not ``None`` win over the URL."""
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"bus URL {url!r}: scheme must be redis://, rediss:// or unix://")
        parsed = parse_url(url)
        address = cls(
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
        return replace(address, **{key: value for key, value in overrides.items() if value is not None})

    @property
    def url(self) -> str:
        """The address as a URL, without the password."""
        user = f"{self.username}@" if self.username else ""
        if self.unix_path:
            return f"unix://{user}{self.unix_path}?db={self.db}"
        return f"{'rediss' if self.tls else 'redis'}://{user}{self.host}:{self.port}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a redis-py client (the synchronous ``acclient``)."""
        kwargs: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        if self.unix_path:
            kwargs.update(unix_socket_path=self.unix_path, connection_class=UnixDomainSocketConnection)
        else:
            kwargs.update(host=self.host, port=self.port)
        if self.tls:
            kwargs.update(ssl=True, ssl_ca_certs=self.ca_file, ssl_certfile=self.cert_file,
                          ssl_keyfile=self.key_file)
        return kwargs
