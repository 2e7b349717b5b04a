"""The Python client of the agent controller, compatible with the 2015 ``acclient``.

    client = acclient.Client("localhost", 6379)
    cmd = client.execute(1, 1, "bash", ["-c", "echo 20::: && ls -l /opt && echo :::"])
    job = cmd.get_next_result(timeout=10)
    print(job.data)
"""

from acclient.client import Client
from acclient.cmd import BaseCmd, Cmd
from acclient.job import Job
from acclient.runargs import RunArgs

__all__ = ["BaseCmd", "Client", "Cmd", "Job", "RunArgs"]
