"""Zero-downtime updates and rollback, measured: four clients load /api/health and /api/greeting (which
reads db_production) through nginx on the published port while each change happens, and every
non-2xx answer and connection error counts as a failure."""

import json
import re
import urllib.request

import pytest

from tests import lab as lab_tools
from tests.lab import container, mysql, host_secret, under_load

pytestmark = pytest.mark.e2e


def api_version(provisioned) -> str:
    with urllib.request.urlopen(f"http://{provisioned.host.address}/api/health", timeout=10) as response:
        return json.loads(response.read()).get("version", "")


@pytest.fixture(scope="module")
def serving(provisioned):
    """The sample API deployed by the maintainer, and a row for /api/greeting to read."""
    provisioned.wait_healthy()
    provisioned.maintainer("kono-deploy")
    made = lab_tools.add_greeting(provisioned.host, "hello under load")
    assert made.returncode == 0, made.stderr
    return provisioned


def test_a_maintainer_deploying_new_api_code_drops_no_request(serving):
    serving.git.push_api("zd-1")
    out, load = under_load(serving.host.address, lambda: serving.maintainer("kono-deploy api").stdout)
    assert load.failures == [], load
    assert "api: serving" in out and api_version(serving) == "zd-1"


def test_a_release_that_fails_its_health_check_never_takes_traffic(serving):
    before = api_version(serving)
    release = serving.maintainer("readlink /srv/api/current").stdout
    serving.git.push_api("zd-broken", broken=True)
    failed, load = under_load(serving.host.address,
                              lambda: serving.maintainer("kono-deploy api", check=False))
    assert load.failures == [], load
    assert failed.returncode != 0
    assert "failed its health check and never took traffic" in failed.stderr
    assert "exited" in failed.stderr  # why: the release's process exited
    assert api_version(serving) == before
    assert serving.maintainer("readlink /srv/api/current").stdout == release  # pointed back


def test_rollback_returns_to_the_previous_release_without_dropping_a_request(serving):
    serving.git.push_api("zd-2")
    serving.maintainer("kono-deploy api")
    assert api_version(serving) == "zd-2"
    out, load = under_load(serving.host.address, lambda: serving.maintainer("kono-deploy --rollback api").stdout)
    assert load.failures == [], load
    assert "api: rolled back from" in out
    assert api_version(serving) == "zd-1"


def test_releases_are_kept_up_to_the_knob_and_the_app_switches_atomically(serving):
    for n in range(4):
        serving.git.push_api(f"zd-keep-{n}")
        serving.maintainer("kono-deploy api")
    releases = serving.maintainer("ls /srv/api/releases").stdout.split()
    assert len(releases) == lab_tools.DEFAULTS["releases_kept"]
    assert serving.maintainer("readlink /srv/app/current").stdout.startswith("releases/")
    page, load = under_load(serving.host.address, lambda: serving.maintainer("kono-deploy app").stdout,
                            paths=("/",))
    assert load.failures == [], load


def test_a_rotated_api_key_replaces_the_api_container_without_dropping_a_request(serving):
    before = serving.container_ids()
    run, load = under_load(serving.host.address,
                           lambda: lab_tools.rotate(serving.inventory, "production/api_key"))
    assert load.failures == [], load
    assert "api gets a new container (secret): started beside the old one" in run.output
    after = serving.container_ids()
    assert after["api"] != before["api"]
    assert {s for s in after if after[s] != before[s]} == {"api"}
    assert serving.deploy("--json").changes == 0


def test_a_new_api_image_tag_replaces_the_container_without_dropping_a_request(serving):
    image = lab_tools.DEFAULTS["node_image"]
    retagged = f"{image}-retagged"
    serving.host.ssh(f"docker tag {image} {retagged}", user="kono")
    before = serving.container_ids()
    try:
        run, load = under_load(serving.host.address,
                               lambda: serving.deploy("--data", f"node_image={retagged}"))
        assert load.failures == [], load
        assert f"api gets a new container (image {image} -> {retagged}): started beside the old one" in run.output
        after = serving.container_ids()
        assert {s for s in after if after[s] != before[s]} == {"api"}
    finally:
        serving.deploy("--data", f"node_image={image}")


def test_rotating_the_apis_database_password_under_load_drops_no_request_nor_restarts_db_production(serving):
    before = serving.container_ids()
    old = host_secret(serving.host, "production", "db_api_password")
    # /api/greeting reads db_production as the api user, whose password this is.
    _, load = under_load(serving.host.address,
                         lambda: lab_tools.rotate(serving.inventory, "production/db_api_password"))
    assert load.failures == [], load
    serving.wait_healthy()
    after = serving.container_ids()
    assert after["db_production"] == before["db_production"]
    assert after["api"] != before["api"]
    new = host_secret(serving.host, "production", "db_api_password")
    assert new != old
    assert mysql(serving.host, "api", new, "SELECT 1;").returncode == 0
    assert mysql(serving.host, "api", old, "SELECT 1;").returncode != 0  # the old one no longer opens a session


def test_an_nginx_configuration_change_is_a_reload_not_a_restart(serving):
    before = serving.container_ids()
    plan = serving.deploy("--dry", "--data", "server_name=zd.example _")
    assert "nginx/ changes: checked, then applied by a reload (no downtime)" in plan.output
    run, load = under_load(serving.host.address,
                           lambda: serving.deploy("--json", "--data", "server_name=zd.example _"))
    assert load.failures == [], load
    assert run.changes == 1  # the project files; the stack is not brought up again
    assert serving.container_ids() == before
    assert "server_name zd.example _;" in serving.host.ssh(f"docker exec {container('nginx')} cat "
                                                           "/etc/nginx/conf.d/default.conf", user="kono").stdout
    assert serving.deploy("--json", "--data", "server_name=zd.example _").changes == 0


def test_a_bad_nginx_configuration_fails_with_nginxs_message_and_the_old_one_keeps_serving(serving):
    live = serving.host.ssh("sha256sum /srv/kono/nginx/default.conf", user="kono").stdout
    bad, load = under_load(serving.host.address,
                           lambda: serving.deploy("--data", "server_name=~*", check=False))
    assert load.failures == [], load
    assert bad.returncode != 0
    assert re.search(r"pcre2?_compile\(\) failed", bad.output), bad.output[-3000:]  # nginx's own words
    assert serving.host.ssh("sha256sum /srv/kono/nginx/default.conf", user="kono").stdout == live
    serving.deploy("--data", "server_name=_")


def test_a_deploy_that_changes_nothing_drops_no_request(serving):
    run, load = under_load(serving.host.address, lambda: serving.deploy("--json"))
    assert load.failures == [], load
    assert run.changes == 0


def test_a_change_that_must_restart_a_service_says_so_before(serving):
    plan = serving.deploy("--dry", "--data", "maintainer_ssh_port=8023")
    assert re.search(r"maintainer gets a new container \(configuration\): RESTARTS: open SSH sessions", plan.output)
    assert serving.deploy("--json").changes == 0  # the plan changed nothing
