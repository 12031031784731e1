"""The webhook's and the heartbeat's URLs and the mail server's password (kono/alerts.py): supplied by
the operator, checked without being shown, required given or on the host before anything changes;
all need monitoring, and email its sender and server."""

import pytest

from kono.alerts import alert_secret_problems, alert_secrets
from kono.settings import SettingsError
from tests.lab import settings_of

URL = "https://hooks.example.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"


def alerting(tmp_path):
    return settings_of(monitoring=True, alert_webhook=True, local_secrets_dir=str(tmp_path))


def test_the_url_comes_from_the_environment_before_the_local_file(tmp_path, monkeypatch):
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "webhook_url").write_text("https://file.example.com/hook\n")
    assert alert_secrets(alerting(tmp_path)) == {"config/alerts/webhook_url": "https://file.example.com/hook"}
    monkeypatch.setenv("KONO_SECRET_ALERTS_WEBHOOK_URL", URL)
    assert alert_secrets(alerting(tmp_path)) == {"config/alerts/webhook_url": URL}
    assert alert_secrets(settings_of(monitoring=True, local_secrets_dir=str(tmp_path))) == {}  # not asked for


def test_a_value_that_is_not_a_url_is_refused_without_being_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("KONO_SECRET_ALERTS_WEBHOOK_URL", "hooks.example.com/T000/s3cr3t-t0ken")
    with pytest.raises(SettingsError) as refused:
        alert_secrets(alerting(tmp_path))
    assert "alerts/webhook_url: expected one http:// or https:// URL" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


def test_given_nowhere_and_not_on_the_host_stops_the_deploy_naming_where_it_is_looked_for(tmp_path):
    problems = alert_secret_problems(alerting(tmp_path), {}, {})
    assert problems == [f"alerts/webhook_url: expected the webhook's URL in $KONO_SECRET_ALERTS_WEBHOOK_URL or the file "
                        f"{tmp_path}/alerts/webhook_url (alert_webhook = True), and the host has none"]
    on_host = {"config/alerts/webhook_url": ("f", "600", 70)}
    assert alert_secret_problems(alerting(tmp_path), {}, on_host) == []
    assert alert_secret_problems(alerting(tmp_path), {"config/alerts/webhook_url": URL}, {}) == []


@pytest.mark.parametrize("knob", ["alert_webhook", "alert_heartbeat"])
def test_alert_knobs_need_monitoring(knob):
    with pytest.raises(SettingsError, match=rf"^{knob}: expected False with monitoring = False"):
        settings_of(**{knob: True})


def test_the_heartbeats_url_is_asked_for_with_alert_heartbeat_alone(tmp_path, monkeypatch):
    settings = settings_of(monitoring=True, alert_heartbeat=True, local_secrets_dir=str(tmp_path))
    assert alert_secret_problems(settings, {}, {}) == [
        f"alerts/heartbeat_url: expected the heartbeat's URL in $KONO_SECRET_ALERTS_HEARTBEAT_URL or the file "
        f"{tmp_path}/alerts/heartbeat_url (alert_heartbeat = True), and the host has none"]
    monkeypatch.setenv("KONO_SECRET_ALERTS_HEARTBEAT_URL", "https://hc-ping.example.com/0f1e2d3c")
    assert alert_secrets(settings) == {"config/alerts/heartbeat_url": "https://hc-ping.example.com/0f1e2d3c"}


EMAIL = dict(monitoring=True, alert_email_to=["oncall@example.com"], alert_email_from="kono@example.com",
             alert_smtp_server="smtp.example.com:587")


def test_the_mail_servers_password_is_asked_for_only_with_a_login(tmp_path, monkeypatch):
    without_login = settings_of(**EMAIL, local_secrets_dir=str(tmp_path))
    assert alert_secret_problems(without_login, {}, {}) == []
    settings = settings_of(**EMAIL, alert_smtp_username="kono", local_secrets_dir=str(tmp_path))
    assert alert_secret_problems(settings, {}, {}) == [
        f"alerts/smtp_password: expected the mail server's password in $KONO_SECRET_ALERTS_SMTP_PASSWORD or the file "
        f"{tmp_path}/alerts/smtp_password (alert_smtp_username is set), and the host has none"]
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "smtp_password").write_text("pa ss:w0rd\n")  # a file's newline is not part of it
    assert alert_secrets(settings) == {"config/alerts/smtp_password": "pa ss:w0rd"}
    monkeypatch.setenv("KONO_SECRET_ALERTS_SMTP_PASSWORD", "first line\ns3cr3t second")
    with pytest.raises(SettingsError) as refused:
        alert_secrets(settings)
    assert str(refused.value).startswith("alerts/smtp_password: expected one line, not empty in "
                                         "$KONO_SECRET_ALERTS_SMTP_PASSWORD")
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize("knobs, error", [
    (dict(alert_email_to=["oncall@example.com"]), r"^alert_email_to: expected \[\] with monitoring = False"),
    ({**EMAIL, "alert_email_from": None}, r"^alert_email_from: expected it set with alert_email_to"),
    ({**EMAIL, "alert_smtp_server": None}, r"^alert_smtp_server: expected it set with alert_email_to"),
    ({**EMAIL, "alert_email_to": ["oncall"]}, r"^alert_email_to\[0\]: expected an email address"),
    ({**EMAIL, "alert_email_to": ["a@example.com, b@example.com"]}, r"^alert_email_to\[0\]: expected an email"),
    ({**EMAIL, "alert_smtp_server": "smtp.example.com"}, r"^alert_smtp_server: expected a mail server as "
                                                         r"\"host:port\""),
    ({**EMAIL, "alert_smtp_server": "smtp.example.com:70000"}, r"^alert_smtp_server: expected a mail server"),
    ({**EMAIL, "alert_smtp_username": "two words"}, r"^alert_smtp_username: expected a login name"),
    ({**EMAIL, "alert_smtp_ca_bundle": "/nonexistent/ca.pem"}, r"^alert_smtp_ca_bundle: expected a readable PEM"),
])
def test_email_knobs_are_checked_before_anything_changes(knobs, error):
    with pytest.raises(SettingsError, match=error):
        settings_of(**knobs)
