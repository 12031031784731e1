"""HTTPS without a host: the provided pair is checked before anything changes, the nginx files say
what the issue asks (HTTP/2, intermediate TLS, redirect but for challenges, HSTS only when asked)."""

import datetime

import pytest

from kono import stack
from kono.settings import SettingsError
from kono.tls import certificate_summary, check_provided, days_left
from tests.lab import make_certificate, settings_of as settings

WHERE = {"tls/certificate": "secrets/tls/certificate", "tls/private_key": "secrets/tls/private_key"}


@pytest.fixture
def ca(tmp_path):
    return make_certificate(tmp_path / "ca", [], days=365, ca=True)


def pair(tmp_path, ca, names, days=90, name="site"):
    make_certificate(tmp_path / name, names, issuer=ca, days=days)
    return (tmp_path / f"{name}.pem").read_text(), (tmp_path / f"{name}.key").read_text()


def test_a_good_pair_passes_and_is_summarised(tmp_path, ca):
    certificate, key = pair(tmp_path, ca, ["kono.example.com", "*.kono.example.com"])
    check_provided(certificate, key, ("kono.example.com", "www.kono.example.com"), WHERE)
    summary = certificate_summary(certificate)
    assert summary["names"] == ["*.kono.example.com", "kono.example.com"]
    assert "kono test CA" in summary["issuer"] and 89 < days_left(summary) <= 90


@pytest.mark.parametrize("problem, expected", [
    ("not pem", "tls/certificate: expected a PEM certificate"),
    ("bad key", "tls/private_key: expected an unencrypted PEM private key"),
    ("other key", "tls/private_key: expected the private key of the certificate in secrets/tls/certificate"),
    ("other name", "does not cover kono.example.com"),
    ("deep wildcard", "does not cover a.b.example.com"),
    ("expired", "expected a certificate that has not expired"),
])
def test_a_bad_pair_is_refused_naming_the_secret_and_where_it_came_from(tmp_path, ca, problem, expected):
    certificate, key = pair(tmp_path, ca, ["kono.example.com", "*.example.com"])
    domains = ("kono.example.com",)
    now = None
    if problem == "not pem":
        certificate = "hello"
    elif problem == "bad key":
        key = "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    elif problem == "other key":
        key = pair(tmp_path, ca, ["kono.example.com"], name="other")[1]
    elif problem == "other name":
        certificate, key = pair(tmp_path, ca, ["elsewhere.example.com"], name="elsewhere")
    elif problem == "deep wildcard":
        domains = ("a.b.example.com",)
    elif problem == "expired":
        now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=91)
    with pytest.raises(SettingsError, match=expected):
        check_provided(certificate, key, domains, WHERE, now=now)


def test_nginx_files_serve_http2_with_intermediate_tls_and_redirect_but_for_challenges():
    stack.project_files.cache_clear()
    off = stack.project_files(settings())
    assert "nginx/https.server" not in off and "include" not in off["nginx/default.conf"].split("site.locations")[1]
    assert "443" not in off["compose.yaml"] and "acme" not in off["compose.yaml"]

    stack.project_files.cache_clear()
    acme = stack.project_files(settings(https="acme", domains=["kono.example.com"], acme_email="ops@example.com",
                                        https_port=8443))
    server = acme["nginx/https.server"]
    for line in ("listen 443 ssl;", "http2 on;", "server_name kono.example.com;",
                 "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_prefer_server_ciphers off;", "ssl_session_tickets off;",
                 "location ^~ /.well-known/acme-challenge/ {", "return 301 https://$host:8443$request_uri;"):
        assert line in server, line
    assert "Strict-Transport-Security" not in server
    assert "include tls/*.conf;" in acme["nginx/default.conf"]  # only once acme installed a certificate
    assert '"8443:443"' in acme["compose.yaml"] and "acme/kono-acme.sh" in acme

    stack.project_files.cache_clear()
    provided = stack.project_files(settings(https="provided", domains=["kono.example.com"], hsts_max_age=600))
    assert "include conf.d/https.server;" in provided["nginx/default.conf"]
    assert 'add_header Strict-Transport-Security "max-age=600" always;' in provided["nginx/https.server"]
    assert "acme-challenge" not in provided["nginx/https.server"]
    assert "return 301 https://$host$request_uri;" in provided["nginx/https.server"]
    assert "./config/tls:/etc/nginx/tls:ro" in provided["compose.yaml"]
    assert stack.tls_check_mounts(settings(https="provided", domains=["kono.example.com"])) == (
        ("./config/tls", "/etc/nginx/tls"),)
    stack.project_files.cache_clear()
