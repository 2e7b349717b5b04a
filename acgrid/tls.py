"""Certificates for a TLS-only grid: a throwaway CA, a server and a client certificate."""

from dataclasses import dataclass
from pathlib import Path

from acgrid.processes import GridError


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The certificate files of a TLS grid: a CA, the server's and a client's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def security(self) -> dict[str, str]:
        """``BusAddress`` overrides for a client of this bus."""
        return {"ca_file": str(self.ca), "cert_file": str(self.client_cert), "key_file": str(self.client_key)}


def make_tls_files(folder: Path) -> TlsFiles:
    """Write a fresh CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    try:
        import trustme
    except ImportError:
        raise GridError("a TLS grid needs the trustme package: pip install trustme") from None
    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name="ac-grid")
    server = authority.issue_cert("127.0.0.1", "localhost")
    client = authority.issue_cert("ac-grid-client")
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                     folder / "client.key")
    authority.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    for path in (files.server_key, files.client_key):
        path.chmod(0o600)
    return files
