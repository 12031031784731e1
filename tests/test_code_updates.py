"""Code updates without host access: the maintainer pulls, the services pick the change up."""

import json
import time
import urllib.request

import pytest

from tests import lab as lab_tools
from tests.lab import container

pytestmark = pytest.mark.e2e


def get(provisioned, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{provisioned.host.address}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def eventually(check, timeout: float = 60):
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > end:
            return result
        time.sleep(0.5)


def api_version(provisioned):
    status, body = get(provisioned, "/api/health")
    return json.loads(body).get("version") if status == 200 else None


def test_maintainer_deploys_the_api_and_the_app_and_new_commits_replace_them(provisioned):
    out = provisioned.maintainer("kono-deploy").stdout
    assert "api:" in out and "app:" in out
    # The repository's newest commit (other modules push their own versions to the same session's host).
    pushed = provisioned.git.api_version()
    assert eventually(lambda: api_version(provisioned) == pushed), get(provisioned, "/api/health")
    status, page = get(provisioned, "/")
    assert status == 200 and b"kono sample app v1" in page

    provisioned.git.push_api("code-updates-v2")
    provisioned.maintainer("kono-deploy api")
    assert eventually(lambda: api_version(provisioned) == "code-updates-v2"), get(provisioned, "/api/health")

    provisioned.git.commit("app", "v2", edit=("index.html", "app v1", "app v2"), push=True)
    provisioned.maintainer("kono-deploy app", login="wheel")
    status, page = get(provisioned, "/")
    assert status == 200 and b"kono sample app v2" in page


def test_the_api_reads_db_production_with_the_api_users_credentials(provisioned):
    provisioned.maintainer("kono-deploy api")
    assert eventually(lambda: api_version(provisioned) is not None)
    wrote = lab_tools.add_greeting(provisioned.host, "hello from db_production")
    assert wrote.returncode == 0, wrote.stderr
    status, body = get(provisioned, "/api/greeting")
    assert status == 200, body
    assert json.loads(body)["message"] == "hello from db_production"


def nginx_logs_reach_the_maintainer_and_docker(provisioned, marker: str) -> None:
    get(provisioned, f"/api/health?from={marker}")
    get(provisioned, f"/static/no-such-page-{marker}")  # nginx logs the failed open() as an error
    access = provisioned.maintainer("test ! -L /var/log/nginx/access.log && cat /var/log/nginx/access.log",
                                    check=False)
    assert access.returncode == 0 and f"/api/health?from={marker}" in access.stdout, access
    errors = provisioned.maintainer("cat /var/log/nginx/error.log").stdout
    assert f"no-such-page-{marker}" in errors
    docker_logs = provisioned.host.ssh(f"docker logs {container('nginx')} 2>&1", user=lab_tools.DEPLOY_USER).stdout
    assert f"/api/health?from={marker}" in docker_logs and f"no-such-page-{marker}" in docker_logs


def test_api_and_nginx_logs_are_readable_in_the_maintainer_and_in_docker_logs(provisioned):
    get(provisioned, "/api/health?from=logs-test")
    assert eventually(lambda: "/api/health?from=logs-test" in provisioned.maintainer(
        "cat /var/log/api/api.log").stdout, timeout=10)
    nginx_logs_reach_the_maintainer_and_docker(provisioned, "logs-test")


def test_an_nginx_log_volume_holding_the_images_symlinks_is_repaired_by_the_next_deploy(provisioned):
    """As on a host deployed before this fix with the official image: the volume holds the image's
    /var/log/nginx, i.e. access.log -> /dev/stdout and error.log -> /dev/stderr."""
    provisioned.wait_healthy()
    nginx = container("nginx")
    volume = f"{lab_tools.DEFAULTS['compose_project']}_nginx_log"
    provisioned.host.ssh(
        f"docker stop --time 5 {nginx} && docker run --rm -v {volume}:/logs --entrypoint sh "
        f"{lab_tools.DEFAULTS['nginx_image']} -c 'ln -sf /dev/stdout /logs/access.log && "
        "ln -sf /dev/stderr /logs/error.log'", user=lab_tools.DEPLOY_USER)
    assert provisioned.deploy("--json").changes == 1  # the bring-up, nothing else
    provisioned.wait_healthy()
    nginx_logs_reach_the_maintainer_and_docker(provisioned, "after-repair")
