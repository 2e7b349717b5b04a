"""``ac-controller certs``: a CA, a certificate for the bus (Redis) and a client certificate per node.

Made with the ``cryptography`` library (``pip install 'agentcontroller[certs]'``), as docs/certificates.md does by
hand with openssl: ECDSA P-256 keys, SHA-256 signatures, the extensions a strict TLS stack checks (basic
constraints, key usage, extended key usage, subject and authority key identifiers, subject alternative names).

A folder holds one CA and what it signed::

    ca.pem  ca.key                   the CA (keep ca.key off the bus and the nodes)
    server/  server.pem server.key ca.pem     for Redis: tls-cert-file, tls-key-file, tls-ca-cert-file
    <name>/  client.pem client.key ca.pem     for a node (its hostname), a controller or a person

A node's folder is the one ``ac-controller acl add-agents`` writes its agent2.toml into: copy it to ``/etc/ac``.
"""

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.fleet import CA_FILE, CERT_FILE, KEY_FILE, check_hostname, write_private

CA_KEY_FILE = "ca.key"
SERVER_DIR = "server"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
#: Days a CA is valid by default; a leaf certificate's default (825 days: what browsers accept at most).
CA_DAYS = 3650
LEAF_DAYS = 825
#: Leaves are valid from a little before now: hosts whose clocks lag still accept them.
BACKDATE = datetime.timedelta(hours=1)


class CertError(Exception):
    """A certificate that cannot be made (a file in the way, no CA, a bad name); the message says what to do."""


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA: its certificate and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate of a folder, as ``certs list`` shows it."""

    path: Path
    subject: str
    names: tuple[str, ...]
    usage: str  # "CA", "server", "client" or "server+client"
    not_after: datetime.datetime
    signed_by_ca: bool  # by the folder's CA


def make_ca(folder: Path, name: str = "agentcontroller CA", days: int = CA_DAYS, force: bool = False) -> Path:
    """A new CA in ``folder`` (``ca.pem``, ``ca.key``); returns the certificate's path."""
    _check_days(days)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = folder / CA_FILE, folder / CA_KEY_FILE
    _refuse_overwrite([cert_path, key_path], force, "a CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentcontroller")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(sign_certificates=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def load_ca(folder: Path) -> Authority:
    cert_path, key_path = folder / CA_FILE, folder / CA_KEY_FILE
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(f"{exc.filename}: no CA here; make one first: ac-controller certs ca {folder}") from None
    except ValueError as exc:
        raise CertError(f"{folder}: not a usable CA ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertError(f"{key_path} is not the key of {cert_path}")
    return Authority(cert, key)


def issue_server(folder: Path, names: Sequence[str], days: int = LEAF_DAYS, force: bool = False) -> Path:
    """The bus's certificate, for every DNS name and IP address in ``names`` (clients check the one they connect
    to), signed by ``folder``'s CA, in ``folder/server/``; returns that folder."""
    if not names:
        raise CertError("name the bus: the DNS names and IP addresses clients connect to")
    sans = [_san(name) for name in names]
    return _issue(folder, SERVER_DIR, names[0], sans, (ExtendedKeyUsageOID.SERVER_AUTH,
                                                        ExtendedKeyUsageOID.CLIENT_AUTH), days, force,
                  SERVER_CERT_FILE, SERVER_KEY_FILE)


def issue_client(folder: Path, name: str, days: int = LEAF_DAYS, force: bool = False) -> Path:
    """A client certificate for ``name`` (a node's hostname, a controller, a person), signed by ``folder``'s CA,
    in ``folder/<name>/``; returns that folder."""
    problem = check_hostname(name)
    if problem:
        raise CertError(f"{name!r} {problem}: it names the certificate and its folder")
    return _issue(folder, name, name, [x509.DNSName(name)], (ExtendedKeyUsageOID.CLIENT_AUTH,), days, force,
                  CERT_FILE, KEY_FILE)


def describe(folder: Path) -> list[CertInfo]:
    """Every certificate under ``folder`` (its CA first), with what it is for and when it expires."""
    try:
        ca: x509.Certificate | None = x509.load_pem_x509_certificate((folder / CA_FILE).read_bytes())
    except (OSError, ValueError):
        ca = None
    found = []
    for path in sorted(folder.rglob("*.pem"), key=lambda path: (path != folder / CA_FILE, str(path))):
        if path.name == CA_FILE and path != folder / CA_FILE:
            continue  # the copies of the CA in each folder
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            continue
        found.append(CertInfo(path, cert.subject.rfc4514_string(), _names(cert), _usage(cert),
                              cert.not_valid_after_utc, ca is not None and _signed_by(cert, ca)))
    return found


def _issue(folder: Path, subfolder: str, common_name: str, sans: list[x509.GeneralName],
           usages: tuple[x509.ObjectIdentifier, ...], days: int, force: bool, cert_name: str,
           key_name: str) -> Path:
    _check_days(days)
    authority = load_ca(folder)
    target = folder / subfolder
    target.mkdir(mode=0o700, exist_ok=True)
    cert_path, key_path = target / cert_name, target / key_name
    _refuse_overwrite([cert_path, key_path], force, f"a certificate for {common_name}")
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), authority.cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key_id = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(authority.cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - BACKDATE).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(sign_certificates=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(authority.key, hashes.SHA256())
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (target / CA_FILE).write_bytes(authority.cert.public_bytes(serialization.Encoding.PEM))
    return target


def _key_usage(sign_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not sign_certificates, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=sign_certificates,
                         crl_sign=sign_certificates, encipher_only=False, decipher_only=False)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    problem = check_hostname(name)
    if problem:
        raise CertError(f"{name!r} {problem}, nor an IP address")
    return x509.DNSName(name)


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (*sans.get_values_for_type(x509.DNSName), *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)))


def _usage(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "CA"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return "any"
    return "+".join(label for oid, label in ((ExtendedKeyUsageOID.SERVER_AUTH, "server"),
                                             (ExtendedKeyUsageOID.CLIENT_AUTH, "client")) if oid in usages) or "other"


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_private(path, pem.decode())


def _refuse_overwrite(paths: list[Path], force: bool, what: str) -> None:
    existing = [str(path) for path in paths if path.exists()]
    if existing and not force:
        raise CertError(f"{existing[0]} exists: --force replaces it with {what} (docs/certificates.md: rotating)")


def _check_days(days: int) -> None:
    if days <= 0:
        raise CertError(f"--days must be positive, got {days}")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)

