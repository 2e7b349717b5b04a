"""The Python client of the agent controller, compatible with the 2015 ``acclient``.

    client = acclient.Client("localhost", 6379)
    cmd = client.execute(1, 1, "bash", ["-c", "echo 20::: && ls -l /opt && echo :::"])
    job = cmd.get_next_result(timeout=10)
    print(job.data)
"""

from typing import Any

from acclient.client import Client
from acclient.cmd import BaseCmd, Cmd
from acclient.errors import CommandLost, JobError, NoControllerError, NoTargetError
from acclient.job import Job
from acclient.runargs import RunArgs

__all__ = ["BaseCmd", "Client", "Cmd", "CommandLost", "Job", "JobError", "NoControllerError", "NoTargetError",
           "RunArgs", "get", "getRunArgs", "runArgs"]


def get(address: str = "localhost", port: int = 6379, password: str | None = None, db: int = 0) -> Client:
    """The usage page's spelling of ``Client(address, port, password, db)``."""
    return Client(address, port, password, db)


def getRunArgs(**args: Any) -> RunArgs:
    """The usage page's spelling of ``RunArgs(...)``."""
    return RunArgs(**args)


runArgs = getRunArgs
