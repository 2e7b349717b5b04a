"""The quick-start demo: real commands through the client, results printed."""

import acclient
from acgrid.launcher import AgentSpec


def run_demo(client: acclient.Client, agents: list[AgentSpec]) -> None:
    first = agents[0]
    gid, nid = first.gid, first.nid

    _title(f"execute 'ls -l /' on agent {gid}:{nid}")
    job = client.execute(gid, nid, "ls", ["-l", "/"]).get_next_result(timeout=30)
    _show(job)
    print("stdout:")
    print(_indent(job.streams[0]))

    _title("the seed's example: bash -c 'echo 20::: && ls -l /opt && echo :::'")
    job = client.execute(gid, nid, "bash", ["-c", "echo 20::: && ls -l /opt && echo :::"]).get_next_result(timeout=30)
    _show(job)
    print("job.data:")
    print(_indent(job.data))

    _title("a failing command")
    _show(client.execute(gid, nid, "ls", ["/no/such/path"]).get_next_result(timeout=30))

    _title(f"ping every agent (role '*', fanout) - {len(agents)} expected")
    cmd = client.cmd(None, None, "ping", None, role="*", fanout=True)
    for _ in agents:
        _show(cmd.get_next_result(timeout=30))


def _title(text: str) -> None:
    print(f"\n== {text}")


def _show(job: acclient.Job) -> None:
    print(f"agent {job.gid}:{job.nid}  state {job.state}  level {job.level}  time {job.time} ms"
          + (f"  data {job.data!r}" if job.state != "SUCCESS" or job.cmd != "execute" else ""))


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in (text or "").rstrip("\n").splitlines())
