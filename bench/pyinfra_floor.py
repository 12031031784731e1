# pyinfra's floor for a deploy of kono's shape: as many operations as a no-op deploy runs (six), the
# first and the last each running one remote command (`true`), nothing read, nothing compared. What
# any pyinfra deploy of this shape costs on these hosts: bench/run.py measures it beside ours.
from pyinfra import host
from pyinfra.api import operation

OPERATIONS = 6


@operation(is_idempotent=False)
def step(index: int, remote: bool):
    """
    Run `true` on the host when ``remote``, at execution; change nothing.

    **Example:**

    .. code:: python

        step(name="Step 0", index=0, remote=True)
    """
    if remote and host.state.is_executing:
        host.run_shell_command("true")
    return
    yield


for index in range(OPERATIONS):
    step(name=f"Step {index}", index=index, remote=index in (0, OPERATIONS - 1))
