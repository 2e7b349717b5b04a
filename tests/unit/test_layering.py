"""The layering of the packages, read from their source (``ast``): who may import whom, where no I/O happens, and
that every batch op code ``controller/batch.py`` stages is one ``route.lua`` documents and handles.

* ``controller``, ``agent`` and ``acclient`` import none of each other (what they share is in ``protocol``,
  ``acbus``, ``acdaemon``);
* ``protocol`` (the wire) imports only the standard library and itself, and does no I/O;
* ``acclient`` (the synchronous client) imports no trio and no trio bus code: ``acbus.address`` only;
* ``import acclient`` in a fresh interpreter loads no trio.
"""

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "controller", "agent", "acclient", "acbus", "acdaemon", "acgrid", "extensions")
#: None of these three may import another of them.
APART = ("controller", "agent", "acclient")
#: Modules whose import means I/O: ``protocol`` may import none of them (nor call ``open()``).
IO_MODULES = ("socket", "ssl", "subprocess", "sqlite3", "trio", "redis", "hiredis", "psutil", "asyncio", "urllib",
              "http")
#: What ``acclient`` may not import: trio and what runs on it.
NOT_IN_CLIENT = ("trio", "acbus.link", "acbus.connection", "agent", "controller")

BATCH = REPO / "controller" / "batch.py"
ROUTE_LUA = REPO / "controller" / "scripts" / "route.lua"


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # absolute, dotted

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: imports {self.module}"


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def imports(path: Path) -> Iterator[Import]:
    """Every import in ``path`` (also those inside functions), relative ones made absolute; ``from a import b``
    yields ``a`` and ``a.b`` (``b`` may be a module)."""
    package = list(path.relative_to(REPO).parts[:-1])  # a module's package; an __init__.py's own
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield Import(path, node.lineno, module)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(path, node.lineno, f"{module}.{alias.name}")


def within(module: str, names: tuple[str, ...] | str) -> str | None:
    """Which of ``names`` (dotted) ``module`` is or is inside, if any."""
    for name in (names,) if isinstance(names, str) else names:
        if module == name or module.startswith(name + "."):
            return name
    return None


def is_stdlib(module: str) -> bool:
    return module.split(".")[0] in sys.stdlib_module_names


def opens(path: Path) -> Iterator[str]:
    """Calls of ``open()`` (the builtin, or ``io``/``os``/``codecs``'s)."""
    for node in ast.walk(parsed(path)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Name) and func.id == "open") or (
                isinstance(func, ast.Attribute) and func.attr == "open" and isinstance(func.value, ast.Name)
                and func.value.id in ("io", "os", "codecs", "builtins")):
            yield f"{path.relative_to(REPO)}:{node.lineno}: calls {ast.unparse(func)}()"


def test_every_package_parses_and_holds_modules():
    for package in PACKAGES:
        found = sources(package)
        assert found, f"{package}/ holds no .py file: is PACKAGES up to date?"
        for path in found:
            parsed(path)  # a SyntaxError names the file and line


def test_controller_agent_and_acclient_import_none_of_each_other():
    crossing = [str(item) for package in APART for path in sources(package) for item in imports(path)
                if within(item.module, tuple(other for other in APART if other != package))]
    assert crossing == [], "\n".join(crossing)


def test_protocol_imports_only_the_standard_library_and_itself():
    foreign = [str(item) for path in sources("protocol") for item in imports(path)
               if not is_stdlib(item.module) and not within(item.module, "protocol")]
    assert foreign == [], "\n".join(foreign)


def test_protocol_does_no_io():
    doing_io = [str(item) for path in sources("protocol") for item in imports(path) if within(item.module, IO_MODULES)]
    doing_io += [call for path in sources("protocol") for call in opens(path)]
    assert doing_io == [], "\n".join(doing_io)


def test_acclient_imports_no_trio_and_no_daemon_code():
    forbidden = [str(item) for path in sources("acclient") for item in imports(path)
                 if within(item.module, NOT_IN_CLIENT)]
    assert forbidden == [], "\n".join(forbidden)


def test_import_acclient_loads_no_trio():
    probe = "import sys, acclient; print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('trio.')))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"import acclient loaded {done.stdout.strip()}"


# -- route.lua's op codes --------------------------------------------------------------------------


def staged_ops(source: str) -> dict[str, int]:
    """The op codes ``batch.py`` stages, each with the line of its first use: the first element of each list
    added to ``self.records`` (``+=``, ``append``/``extend``), and of each list added to a name in ``commit``
    (the ``Q`` records), as string literals or module-level names bound to them."""
    tree = ast.parse(source)
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                if len(names) == len(values):
                    for name, value in zip(names, values, strict=True):
                        if isinstance(name, ast.Name) and isinstance(value, ast.Constant) \
                                and isinstance(value.value, str):
                            constants[name.id] = value.value

    def op_of(record: ast.expr) -> str | None:
        if not isinstance(record, ast.List) or not record.elts:
            return None
        first = record.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
        if isinstance(first, ast.Name):
            return constants.get(first.id)
        return None

    def is_records(node: ast.expr) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "records" \
            and isinstance(node.value, ast.Name) and node.value.id == "self"

    found: dict[str, int] = {}
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            added = None
            if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
                if is_records(node.target) or (function.name in ("commit", "_commit")
                                               and isinstance(node.target, ast.Name)):
                    added = node.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("append", "extend") and is_records(node.func.value) and node.args:
                added = node.args[0] if node.func.attr == "extend" else ast.List([node.args[0]])
            op = op_of(added) if added is not None else None
            if op is not None:
                found.setdefault(op, node.lineno)
    return found


def documented_ops(lua: str) -> set[str]:
    """The op codes listed in the comment ``route.lua`` opens with: lines like ``--   'A' id field job ...``."""
    header = []
    for line in lua.splitlines():
        if not line.startswith("--"):
            break
        header.append(line)
    return set(re.findall(r"^--\s+'([^']+)'", "\n".join(header), re.MULTILINE))


def handled_ops(lua: str) -> set[str]:
    """The op codes the body of ``route.lua`` handles: ``op == 'X'``."""
    body = "\n".join(line for line in lua.splitlines() if not line.lstrip().startswith("--"))
    return set(re.findall(r"\bop\s*==\s*'([^']+)'", body))


def op_problems(batch_source: str, lua: str) -> list[str]:
    staged, documented, handled = staged_ops(batch_source), documented_ops(lua), handled_ops(lua)
    batch, route = BATCH.relative_to(REPO), ROUTE_LUA.relative_to(REPO)
    problems = [f"{batch}:{line}: stages op {op!r}, which {route}'s header does not list"
                for op, line in sorted(staged.items()) if op not in documented]
    problems += [f"{batch}:{line}: stages op {op!r}, which {route} does not handle (no op == {op!r})"
                 for op, line in sorted(staged.items()) if op not in handled]
    problems += [f"{route}: handles op {op!r}, which its header does not list"
                 for op in sorted(handled - documented)]
    problems += [f"{route}: its header lists op {op!r}, which it does not handle"
                 for op in sorted(documented - handled)]
    return problems


def test_the_ops_are_found_at_all():
    staged = staged_ops(BATCH.read_text())
    assert {"Q", "A", "L", "D"} <= set(staged), f"the op codes staged in {BATCH} are no longer found: {staged}"
    assert {"Q", "A", "L", "D"} <= documented_ops(ROUTE_LUA.read_text()) & handled_ops(ROUTE_LUA.read_text())


def test_every_op_batch_stages_is_documented_and_handled_by_route_lua():
    problems = op_problems(BATCH.read_text(), ROUTE_LUA.read_text())
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("batch_source", "lua", "expected"), [
    ('class B:\n    def grant(self):\n        self.records += ["G", 1]\n',
     "-- header\n--   'A' id\nif op == 'A' then\nelseif op == 'G' then\nend\n",
     ["controller/batch.py:3: stages op 'G', which controller/scripts/route.lua's header does not list",
      "controller/scripts/route.lua: handles op 'G', which its header does not list"]),
    ('X, Y = "X", "Y"\nclass B:\n    async def commit(self, args):\n        args += [X, 1]\n'
     '    def y(self):\n        self.records.append(Y)\n',
     "--   'X' one\n--   'Y' two\nif op == 'X' then end\n",
     ["controller/batch.py:6: stages op 'Y', which controller/scripts/route.lua does not handle (no op == 'Y')",
      "controller/scripts/route.lua: its header lists op 'Y', which it does not handle"]),
])
def test_the_op_check_names_what_is_missing(batch_source, lua, expected):
    assert op_problems(batch_source, lua) == expected
