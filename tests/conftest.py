pytest_plugins = ["grid.pytest_plugin"]
