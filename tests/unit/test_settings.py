"""Settings: every knob checked before anything runs, with a message naming the key."""

from types import SimpleNamespace

import pytest

from kono.settings import SettingsError, load
from tests.lab import group_defaults

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhx7mzSuwLbv5Q0jcW2a1rW4yUBnbprqZhYOoN0SaHl ops@laptop"


def data(**overrides):
    return SimpleNamespace(**{**group_defaults(), "deploy_authorized_keys": [KEY], **overrides})


def test_defaults_with_a_key_are_valid():
    settings = load(data())
    assert settings.project_dir == "/srv/kono"
    assert settings.docker_source == "docker"
    assert settings.mysql_image == "mysql:8.4"


@pytest.mark.parametrize("key, value, expected", [
    ("deploy_authorized_keys", [], "non-empty list of SSH public keys"),
    ("deploy_authorized_keys", ["not a key"], "SSH public key line"),
    ("docker_source", "snap", "one of docker, distro"),
    ("http_port", 70000, "port number from 1 to 65535"),
    ("http_port", "80", "port number"),
    ("maintainer_ssh_port", 80, "not already used by http_port"),
    ("project_dir", "srv/kono", "absolute path"),
    ("project_dir", "/", "absolute path"),
    ("deploy_user", "Kono Admin", "Linux user name"),
    ("mysql_image", "MySQL 8", "image reference"),
    ("compose_project", "Kono!", "compose project name"),
    ("docker_live_restore", "yes", "True or False"),
    ("server_name", "bad;name", "nginx server names"),
    ("https", "on", "one of off, acme, provided"),
    ("domains", ["Kono.Example.com"], "DNS name like"),
    ("domains", ["a.example.com", "a.example.com"], "each name once"),
    ("https_port", 80, "not already used by http_port"),
    ("acme_directory_url", "http://acme.example/dir", "https:// URL"),
    ("acme_email", "not-an-address", "email address"),
    ("acme_ca_bundle", "/nonexistent/ca.pem", "readable PEM file"),
    ("hsts_max_age", -1, "whole number >= 0"),
    ("backup_repository", "/var/backups/kono", "restic repository off the host"),
    ("backup_schedule", "3am", "daily time, UTC"),
    ("backup_check_schedule", "sunday 04:30", "weekly day and time"),
    ("backup_keep_daily", 0, "whole number >= 1"),
    ("monitoring", "yes", "True or False"),
    ("metrics_port", 80, "not already used by http_port"),
    ("metrics_allowed_cidrs", ["10.0.0.1/8"], "host bits zero"),
])
def test_bad_input_names_the_key_and_what_was_expected(key, value, expected):
    with pytest.raises(SettingsError) as error:
        load(data(**{key: value}))
    assert str(error.value).startswith(f"{key}") and expected in str(error.value)


def test_group_data_and_settings_declare_the_same_knobs():
    """A knob is declared twice: default in group_data/all.py, type and check in Settings."""
    from kono.settings import KNOBS
    declared = {name for name in group_defaults() if not name.startswith("ssh_")}
    assert declared == set(KNOBS)


def test_optional_knobs_take_none_and_check_a_value():
    assert load(data(api_repo=None)).api_repo is None
    assert load(data(api_repo="git://example.com/api.git")).api_repo == "git://example.com/api.git"
    with pytest.raises(SettingsError, match="api_repo: expected a git URL"):
        load(data(api_repo="not a url"))


def test_maintainer_users_become_logins_with_their_keys():
    assert load(data(maintainer_users={"sysop": [KEY]})).maintainer_users == (("sysop", (KEY,)),)
    with pytest.raises(SettingsError, match=r"maintainer_users\['sysop'\]\[0\]: expected an SSH public key"):
        load(data(maintainer_users={"sysop": ["nope"]}))


def test_https_needs_names_an_email_for_acme_no_wildcard_and_no_overlap_with_server_name(tmp_path):
    domains = ["kono.example.com"]
    with pytest.raises(SettingsError, match="domains: expected at least one DNS name when https = 'provided'"):
        load(data(https="provided"))
    assert load(data(https="provided", domains=["*.example.com"])).domains == ("*.example.com",)
    with pytest.raises(SettingsError, match="acme_email: expected an email address when https = 'acme'"):
        load(data(https="acme", domains=domains))
    with pytest.raises(SettingsError, match="domains: expected names without"):
        load(data(https="acme", domains=["*.example.com"], acme_email="ops@example.com"))
    with pytest.raises(SettingsError, match="server_name: expected names other than those in domains"):
        load(data(https="provided", domains=domains, server_name="kono.example.com"))
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    with pytest.raises(SettingsError, match="acme_ca_bundle: expected a PEM file of CA certificates"):
        load(data(acme_ca_bundle=str(not_pem)))


def test_a_host_that_changes_deploy_user_must_change_ssh_user_with_it():
    from kono.settings import check_login
    check_login(load(data()), data())  # the defaults: both "kono"
    check_login(load(data(deploy_user="ops")), data(deploy_user="ops", ssh_user="ops"))
    with pytest.raises(SettingsError, match=r"^deploy_user: expected the user pyinfra logs in as \(ssh_user 'kono'\), "
                                            r"got 'ops'; .* set ssh_user = 'ops' too"):
        check_login(load(data(deploy_user="ops")), data(deploy_user="ops"))  # ssh_user stays group_data's "kono"


def test_metrics_sources_need_the_firewall():
    with pytest.raises(SettingsError, match=r"^metrics_allowed_cidrs: expected \[\] with firewall = False"):
        load(data(monitoring=True, metrics_allowed_cidrs=["192.0.2.0/24"], firewall=False))
    assert load(data(monitoring=True, metrics_allowed_cidrs=["192.0.2.0/24"])).metrics_allowed_cidrs == ("192.0.2.0/24",)


def test_the_hosts_inventory_name_is_carried_beside_the_knobs_and_is_not_one():
    from types import SimpleNamespace

    from kono.settings import KNOBS, load
    from tests.lab import KEY, group_defaults
    assert "host_name" not in KNOBS
    data = SimpleNamespace(**{**group_defaults(), "deploy_authorized_keys": [KEY]})
    assert load(data, "web-1.example.com").host_name == "web-1.example.com"
    assert load(data).host_name == ""
