"""House rules of the code (issue 19).

* No import cycle among tsrmon's modules: ``test_import_cycles.py`` (an AST
  walk of module-level and function-level imports, reporting the cycle's
  path).  The last known cycle, config <-> alarms.rules, was removed by the
  typed-config change, so no exception is listed.
* No file in tsrmon/ over 500 lines unless ``OVER_500`` says why.
* The live library (tsrmon/live/engineio, tsrmon/live/socketio) imports
  nothing else from tsrmon: here statically, imports inside functions
  included; ``tests/live/test_library_imports.py`` checks it at run time with
  the library at work.
"""

import os

from tests.conftest import ROOT
from tests.foundation.test_import_cycles import _every_import, import_graph

PACKAGE = os.path.join(ROOT, "tsrmon")
MAX_LINES = 500

# Files allowed over MAX_LINES, each with why (none today).
OVER_500 = {}

LIBRARY = ("tsrmon.live.engineio", "tsrmon.live.socketio")


def python_files():
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "node_modules") and not d.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/")


def lines_of(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return sum(1 for _ in f)


def test_no_file_over_500_lines_without_a_reason():
    over = {rel: n for rel in python_files() if (n := lines_of(rel)) > MAX_LINES and rel not in OVER_500}
    assert over == {}, f"over {MAX_LINES} lines: split each by job, or say why in OVER_500"


def test_the_line_count_sees_the_package():
    files = set(python_files())
    assert "tsrmon/web/rest.py" in files and "tsrmon/live/engineio/__init__.py" in files
    assert 0 < lines_of("tsrmon/web/rest.py") <= MAX_LINES


def test_the_live_library_imports_nothing_else_from_tsrmon():
    def inside(module):
        return any(module == lib or module.startswith(lib + ".") for lib in LIBRARY)

    graph = import_graph(_every_import)
    library = sorted(m for m in graph if inside(m))
    assert "tsrmon.live.engineio.server" in library and "tsrmon.live.socketio.server" in library
    # Their parent packages are loaded by any import of them; nothing else may be.
    outside = {m: sorted(t for t in graph[m] if not inside(t) and t not in ("tsrmon", "tsrmon.live"))
               for m in library}
    assert {m: t for m, t in outside.items() if t} == {}
