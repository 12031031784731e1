"""The lab's pure parts: which subnet it takes, which Debian mirror it builds from."""

import pytest

from tests.testhost import SUBNET_CANDIDATES, debian_mirror, free_subnet

ROUTES = """default via 192.0.2.1 dev eth0
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
"""
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n'
DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_first_candidate_when_nothing_routes_it():
    assert free_subnet(ROUTES) == SUBNET_CANDIDATES[0]


def test_a_subnet_another_interface_routes_is_skipped():
    """A second bridge (another lab, a VPN) on 10.231.0.0/24 made the lab hang at "booting"."""
    clash = ROUTES + "10.231.0.0/24 dev br-other proto kernel scope link src 10.231.0.1\n"
    assert free_subnet(clash) == SUBNET_CANDIDATES[1]
    wide = ROUTES + "10.0.0.0/8 dev tun0 scope link\n"
    with pytest.raises(RuntimeError, match="every lab subnet .* is routed elsewhere"):
        free_subnet(wide)


def test_the_mirror_comes_from_apt_not_security(monkeypatch):
    monkeypatch.delenv("KONO_DEBIAN_MIRROR", raising=False)
    assert debian_mirror(DEBIAN, [DEB822]) == "http://deb.debian.org/debian"
    one_line = "deb [signed-by=/k.gpg] http://mirror.example/debian/ trixie main\n"
    assert debian_mirror(DEBIAN, ["deb http://security.debian.org/ trixie-security main\n", one_line]) \
        == "http://mirror.example/debian"


def test_a_machine_that_is_not_debian_must_name_a_mirror(monkeypatch):
    monkeypatch.delenv("KONO_DEBIAN_MIRROR", raising=False)
    with pytest.raises(RuntimeError, match="set KONO_DEBIAN_MIRROR"):
        debian_mirror(UBUNTU, ["deb http://archive.ubuntu.com/ubuntu noble main\n"])
    monkeypatch.setenv("KONO_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    assert debian_mirror(UBUNTU, []) == "http://deb.debian.org/debian"


def test_the_alone_sample_takes_the_last_test_of_each_module():
    from tests.alone import last_of_each_module
    collected = ["tests/test_a.py::test_one", "tests/test_a.py::test_two[x]", "tests/test_b.py::test_only",
                 "", "3 tests collected"]
    assert last_of_each_module(collected) == ["tests/test_a.py::test_two[x]", "tests/test_b.py::test_only"]


def test_the_doubles_cache_is_named_by_everything_they_are_built_from(tmp_path, monkeypatch):
    from tests import lab
    images = tmp_path / "images"
    for folder in ("mysql", "prometheus"):
        (images / folder).mkdir(parents=True)
        (images / folder / "Dockerfile").write_text(f"FROM base\n# {folder}\n")
    monkeypatch.setattr(lab, "IMAGES", images)
    base = tmp_path / "image-base-trixie-0123.tar"
    first = lab.doubles_cache(base, {"mysql": "mysql_image"})
    assert first == lab.doubles_cache(base, {"mysql": "mysql_image"})
    assert first != lab.doubles_cache(base, {"mysql": "mysql_image", "prometheus": "prometheus_image"})
    assert first != lab.doubles_cache(tmp_path / "image-base-trixie-4567.tar", {"mysql": "mysql_image"})
    (images / "mysql" / "entrypoint.sh").write_text("#!/bin/sh\n")
    assert first != lab.doubles_cache(base, {"mysql": "mysql_image"})


def test_the_labs_ssh_runs_again_a_docker_exec_that_never_started_and_nothing_else(monkeypatch, tmp_path):
    import subprocess
    from types import SimpleNamespace

    from tests import testhost
    answers = [(126, "OCI runtime exec failed: exec failed: read init-p: connection reset by peer: unknown\r\n"),
               (0, "done\n"), (126, "printed first\nOCI runtime exec failed: x\n")]
    calls = []

    def fake_run(args, **kwargs):
        calls.append(args)
        code, out = answers.pop(0)
        return subprocess.CompletedProcess(args, code, out, "")
    monkeypatch.setattr(testhost.subprocess, "run", fake_run)
    monkeypatch.setattr(testhost.time, "sleep", lambda s: None)
    host = testhost.TestHost("kono-10", "10.231.0.10", tmp_path, SimpleNamespace(ssh_config=tmp_path / "c"),
                             tmp_path / "console")
    assert host.ssh("docker exec x true").stdout == "done\n" and len(calls) == 2
    assert host.ssh("docker exec x true", check=False).returncode == 126 and len(calls) == 3


def test_the_labs_mail_server_is_as_strict_as_a_providers_starttls_first_then_only_its_login(tmp_path):
    """The mail receiver test_alerting emails to (on loopback here): a client that skips STARTTLS cannot
    log in, nor send without one; a wrong password is refused; the right one, over TLS checked
    against the lab's CA, delivers."""
    import base64
    import smtplib
    import ssl
    from types import SimpleNamespace

    from tests.lab import MailReceiver, make_certificate

    ca = make_certificate(tmp_path / "ca", [], ca=True)
    lab = SimpleNamespace(gateway="127.0.0.1", workdir=tmp_path)
    checked = ssl.create_default_context(cafile=tmp_path / "ca.pem")
    with MailReceiver(lab, ca) as mail:
        with smtplib.SMTP(mail.address, mail.port, timeout=10) as plain:
            plain.ehlo()
            assert not plain.has_extn("auth")
            with pytest.raises(smtplib.SMTPException):
                plain.login(mail.username, mail.password)
            with pytest.raises(smtplib.SMTPException):
                plain.sendmail("kono@example.com", ["oncall@example.com"], "Subject: plain\n\nx")
        with smtplib.SMTP(mail.address, mail.port, timeout=10) as client:
            client.starttls(context=checked)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login(mail.username, mail.password + "x")
        with smtplib.SMTP(mail.address, mail.port, timeout=10) as client:  # AUTH LOGIN asks as real servers do
            client.starttls(context=checked)
            client.ehlo()
            assert client.esmtp_features["auth"].split()[0] == "LOGIN"  # (first: the one Alertmanager takes)
            assert client.docmd("AUTH", "LOGIN") == (334, base64.b64encode(b"Username:"))
            assert client.docmd(base64.b64encode(mail.username.encode()).decode()) == (334, base64.b64encode(b"Password:"))
            assert client.docmd(base64.b64encode(mail.password.encode()).decode())[0] == 235
        with smtplib.SMTP(mail.address, mail.port, timeout=10) as client:
            client.starttls(context=checked)
            client.login(mail.username, mail.password)
            client.sendmail("kono@example.com", ["oncall@example.com"], "Subject: [FIRING] X on h\n\nbody")
        assert mail.subjects() == ["[FIRING] X on h"]
        assert mail.received[0][1] == ["oncall@example.com"]
        assert mail.refused_logins > 0  # (smtplib tries each mechanism the server offers)
