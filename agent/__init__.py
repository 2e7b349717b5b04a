"""The agent: takes commands from its queue on the bus, runs them, parses their
output into level messages, and reports results."""

__version__ = "0.1.0"
