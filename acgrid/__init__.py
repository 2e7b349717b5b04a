"""A local grid: a private redis-server, controllers and agents, for demos,
tests and benchmarks. ``ac-grid`` on the command line; ``Grid`` in Python."""

from acgrid.launcher import AgentSpec, Grid, GridError

__all__ = ["AgentSpec", "Grid", "GridError"]
