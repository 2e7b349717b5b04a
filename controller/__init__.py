"""The controller: takes client commands from the bus, routes them to agents,
records their results, and watches the agents."""
