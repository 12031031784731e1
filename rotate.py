# Rotate one stack secret: the database account's password and the secret file change together,
# then only the services that use the secret are recreated. The new value comes from
# $KONO_SECRET_<ENV>_<NAME> or <local_secrets_dir>/<env>/<name> when given, else is generated on the host:
#     pyinfra inventory.py rotate.py --data rotate=production/db_api_password
from pyinfra import host

from kono.cluster import holds_stack
from kono.deploy_run import begin_deploy, finish_deploy
from kono.rotation import rotate_secret, rotation_target
from kono.settings import check_login, load
from kono.stack import bring_up

settings = load(host.data, host.name)
check_login(settings, host.data)
secret, value = rotation_target(settings, host.data.get("rotate"))

if holds_stack(settings):  # on a cluster, its db node: the secrets are there, and the stack is deployed from it
    begin_deploy(settings)
    rotate_secret(settings, secret, value)
    bring_up(settings)
    finish_deploy(settings)
