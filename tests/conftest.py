pytest_plugins = ["acgrid.pytest_plugin"]
