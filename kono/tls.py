"""HTTPS certificates: the provided ones (checked before anything changes, placed for nginx) and the
ACME ones (first issuance by the deploy; the acme service renews), and what nginx serves now.

``https = "provided"``: the operator gives the certificate (PEM, the chain after it) and its key as
the secrets ``tls/certificate`` and ``tls/private_key``, from the same sources as other secrets
(``KONO_SECRET_TLS_CERTIFICATE``, or ``<local_secrets_dir>/tls/certificate``; the same for the key),
else the host keeps what it has. They are checked here first (both parse, the key is the
certificate's, every name in ``domains`` is covered, not expired), then placed 0600 in
``config/tls/``, which nginx mounts whole: a new pair is applied by nginx's reload, no restart.

``https = "acme"``: the acme service (files/acme/kono-acme.sh) gets and renews them; the deploy runs
its ``issue`` when nginx does not serve a certificate for exactly ``domains``, and fails with the
CA's reason when that fails (plain HTTP keeps serving; the next deploy tries again).

Example::

    provided = provided_tls(settings)       # before anything changes
    place_tls(settings, provided)            # provided: config/tls/
    certificates(settings)                  # acme: first issuance; both: expiry said in drift
"""

from __future__ import annotations

import datetime

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation

from kono import commands
from kono.cluster import holds_stack, is_edge
from kono.host_state import Read, read
from kono.plan import drift
from kono.operator_input import from_operator, secret_sources
from kono.secrets import has_file, supplied_files, supplied_paths
from kono.services import SECRETS, Secret, script
from kono.settings import Settings, SettingsError

EXPIRY_WARNING_DAYS = 14  # drift reports a certificate that expires sooner


def tls_secrets() -> tuple[Secret, Secret]:
    """(the certificate, its private key) as the secrets table names them."""
    certificate, key = (entry for entry in SECRETS if entry.origin == "tls")
    return certificate, key


def certificate_summary(pem: str) -> dict | None:
    """{names, issuer, not_after} of the first certificate in a PEM text; None when there is none."""
    from cryptography import x509  # here: a deploy without certificates does not load it (10 ms)
    from cryptography.x509.oid import ExtensionOID
    try:
        leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    except ValueError:
        return None
    try:
        names = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value \
            .get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return {"names": sorted(names), "issuer": leaf.issuer.rfc4514_string(), "not_after": leaf.not_valid_after_utc}


def days_left(summary: dict, now: datetime.datetime | None = None) -> float:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return (summary["not_after"] - now).total_seconds() / 86400


def _covers(pattern: str, name: str) -> bool:
    if pattern == name:
        return True
    # A wildcard covers one label: *.example.com covers a.example.com, not example.com nor a.b.example.com.
    return pattern.startswith("*.") and name.count(".") == pattern.count(".") and \
        name.split(".", 1)[1] == pattern[2:] and not name.startswith("*.")


def check_provided(certificate_pem: str, key_pem: str, domains: tuple[str, ...], where: dict[str, str],
                   now: datetime.datetime | None = None) -> None:
    """Raise SettingsError, naming the secret and where it came from, unless the pair is usable."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert_entry, key_entry = tls_secrets()
    try:
        chain = x509.load_pem_x509_certificates(certificate_pem.encode())
    except ValueError:
        raise SettingsError(f"{cert_entry.key}: expected a PEM certificate (-----BEGIN CERTIFICATE-----, "
                            f"the chain after it) in {where[cert_entry.key]}") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise SettingsError(f"{key_entry.key}: expected an unencrypted PEM private key in "
                            f"{where[key_entry.key]}") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != \
            chain[0].public_key().public_bytes(serialization.Encoding.DER, public):
        raise SettingsError(f"{key_entry.key}: expected the private key of the certificate in "
                            f"{where[cert_entry.key]}; {where[key_entry.key]} holds another")
    summary = certificate_summary(certificate_pem)
    missing = [name for name in domains if not any(_covers(p, name) for p in summary["names"])]
    if missing:
        raise SettingsError(f"{cert_entry.key}: expected a certificate for every name in domains; "
                            f"{where[cert_entry.key]} does not cover {', '.join(missing)} "
                            f"(it names {', '.join(summary['names']) or 'none'})")
    if days_left(summary, now) <= 0:
        raise SettingsError(f"{cert_entry.key}: expected a certificate that has not expired; the one in "
                            f"{where[cert_entry.key]} expired on {summary['not_after']:%Y-%m-%d}")


def provided_tls(settings: Settings) -> dict[str, str]:
    """With https = "provided": the pair the operator gives, {secret key: PEM text}, checked; {} when
    the host is to keep its own. Raises SettingsError before anything changes."""
    if not settings.tls_provided:
        return {}
    found = {entry.key: from_operator(secret_sources(settings, entry)) for entry in tls_secrets()}
    given = {key: value for key, value in found.items() if value}
    if len(given) == 1:
        missing = next(key for key in found if key not in given)
        raise SettingsError(f"{missing}: expected it together with {next(iter(given))} (a certificate and "
                            f"its key are replaced together)")
    if not given:
        return {}  # the host keeps its own: ``missing_pair`` checks it has one, once the deploy holds the lock
    cert_entry, key_entry = tls_secrets()
    check_provided(given[cert_entry.key][0] + "\n", given[key_entry.key][0] + "\n", settings.domains,
                   {key: value[1] for key, value in given.items()})
    return {key: value[0] + "\n" for key, value in given.items()}


def missing_pair(settings: Settings, provided: dict[str, str], tree: dict) -> list[str]:
    """With https = "provided" and no pair given here: what the host lacks of its own (given its
    ConfigTree)."""
    if not settings.tls_provided or provided:
        return []
    problems = []
    for entry in tls_secrets():
        if not has_file(tree, entry.path):
            problems.append(f"{entry.key}: expected it in {secret_sources(settings, entry)} "
                            f"(https = 'provided'), and the host has none yet")
    return problems


@deploy("TLS files")
def place_tls(settings: Settings, provided: dict[str, str]) -> None:
    if provided:
        supplied_files(name="Provided certificate and key (applied by nginx's reload)", directory=settings.project_dir,
                       files={entry.path: provided[entry.key] for entry in tls_secrets()},
                       compared=supplied_paths(settings))


class ServedCertificate(FactBase):
    """What nginx serves now (or, with ``service="origin"``, what a cluster's origin hands the edges):
    {names, issuer, not_after} of its certificate, or None. Reads only the certificate (public), never
    the key."""

    @staticmethod
    def default():
        return None

    def command(self, project: str, service: str = "nginx") -> str:
        return commands.served_certificate(project, service)

    def process(self, output: list[str]):
        return certificate_summary("\n".join(output))


class AcmeCertificate(FactBase):
    """Whether the acme service's certificate is for its domains from its CA: "current", "stale", or
    "" without an acme service running."""

    @staticmethod
    def default() -> str:
        return ""

    def command(self, project: str) -> str:
        return commands.acme_certificate_state(project, script("acme"))

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""


def _expiry(served: dict | None) -> None:
    if served and days_left(served) < EXPIRY_WARNING_DAYS:
        drift(f"the certificate for {' '.join(served['names'])} expires in {days_left(served):.0f} days "
              f"({served['not_after']:%Y-%m-%d %H:%M} UTC)")


# The service that holds the certificate users get, and how it takes a new one at once: nginx on the
# single host (a checked reload); on a cluster the origin service of the db node, whose copy every edge
# fetches (files/origin/kono-origin.sh).
HOLDERS = {"nginx": "reload", "origin": "copy"}


def holder(settings: Settings) -> str:
    return "origin" if settings.swarm else "nginx"


@operation()
def served_certificate(project: str, domains: tuple[str, ...], issue: bool, service: str = "nginx"):
    """
    Say in the plan (and so in drift) when the certificate ``service`` holds expires within
    EXPIRY_WARNING_DAYS; with ``issue``, run the acme service's issuance when it holds no certificate
    for exactly ``domains``, or the acme service's is another CA's (``acme_directory_url`` changed, as
    from a staging CA to production). A failed issuance fails the deploy with the CA's reason.

    + project: the compose project (the stack's name on a cluster)
    + domains: the names the certificate must carry
    + issue: whether the acme service gets the certificate
    + service: the service holding it (``HOLDERS``): nginx, or a cluster's origin

    **Example:**

    .. code:: python

        served_certificate(name="Certificate", project="kono", domains=("kono.example.com",), issue=True)
    """
    served = read(ServedCertificate, project=project, service=service)
    _expiry(served)
    issuance = commands.issue_certificate(project, script("acme"), service, script(service), HOLDERS[service])
    if issue and (served is None or served["names"] != sorted(domains)):
        drift(f"{service} holds no certificate for {' '.join(domains)} yet")
        yield issuance
        return
    if issue and read(AcmeCertificate, project=project) == "stale":
        drift(f"the certificate for {' '.join(domains)} is another ACME CA's than acme_directory_url's")
        yield issuance
        return
    host.noop(f"{service} holds a certificate for these domains")


@operation()
def edge_certificate(project: str, domains: tuple[str, ...]):
    """
    On a cluster's edge node: say when the certificate its nginx serves expires soon; when it serves
    none for exactly ``domains`` (a new edge, new domains, a first certificate), have it copy the
    origin's now, checked and reloaded (its entrypoint does every few seconds by itself; the deploy
    returns with every edge serving it). Fails, with nginx's or curl's reason, when it cannot.

    + project: the stack's name
    + domains: the names the certificate must carry

    **Example:**

    .. code:: python

        edge_certificate(name="Certificate this edge serves", project="kono", domains=("kono.example.com",))
    """
    served = read(ServedCertificate, project=project, service="nginx")
    _expiry(served)
    if served is None or served["names"] != sorted(domains):
        drift(f"this edge serves no certificate for {' '.join(domains)} yet")
        yield commands.fetch_certificate(project, script("nginx"))
        return
    host.noop("this edge serves a certificate for these domains")


def tls_reads(settings: Settings) -> list[Read]:
    """What ``certificates`` reads from the host (kono/host_state.py reads it with the others)."""
    if not settings.https_on:
        return []
    project = settings.compose_project
    reads: list[Read] = []
    if holds_stack(settings):
        reads.append((ServedCertificate, {"project": project, "service": holder(settings)}))
        if settings.acme_on:
            reads.append((AcmeCertificate, {"project": project}))
    if settings.swarm and is_edge(settings):
        reads.append((ServedCertificate, {"project": project, "service": "nginx"}))
    return reads


@deploy("Certificates")
def certificates(settings: Settings) -> None:
    if not settings.https_on:
        return
    if holds_stack(settings):
        served_certificate(name=f"Certificate {holder(settings)} holds (the acme service issues it when there is none)",
                           project=settings.compose_project, domains=settings.domains, issue=settings.acme_on,
                           service=holder(settings))
    if settings.swarm and is_edge(settings):
        edge_certificate(name="Certificate this edge serves (copied from the origin service)",
                         project=settings.compose_project, domains=settings.domains)

