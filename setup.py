"""The build's one step beyond pyproject.toml: the shell completions and the man page of ``ac``, generated from
its parser (``acclient/cli/parser.py``) by shtab and argparse-manpage, into the package (``acclient/cli/share``).

Both modules are loaded by their paths: the build environment has the build requirements, not the package's own
dependencies (``acclient`` imports redis), and ``parser.py`` and ``manuals.py`` import only the standard library
(and, inside ``manuals.generate``, the two generators).
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithManuals(build_py):
    """``build_py``, then the completions and the man page beside the package's modules."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install: `ac completion` and `ac manpage` make them when asked
        cli = HERE / "acclient" / "cli"
        parser = _load("_ac_cli_parser", cli / "parser.py").build_parser()
        manuals = _load("_ac_cli_manuals", cli / "manuals.py")
        manuals.write_all(Path(self.build_lib) / "acclient" / "cli" / manuals.SHARE, parser,
                          self.distribution.get_version())


setup(cmdclass={"build_py": BuildWithManuals})
