"""The repository is the whole project (issue 14): no tracked file reads or
cites a path outside the checkout (the old ``../shared`` fixtures and spec
folder).  Facts about the deployed system are cited from docs/legacy.md."""

import os
import re
import subprocess

import pytest

from tests.conftest import ROOT

# Spelled in pieces so this file does not match itself if the exclusion below
# is ever lost.
OUTSIDE = [p.replace("|", "") for p in (
    "../sha|red", "/work/sha|red", "sha|red/fixtures", "sha|red/spec", "sha|red/design.md", "legacy-sys|tem.md")]
SELF = os.path.relpath(os.path.abspath(__file__), ROOT)


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (git ls-files failed)")
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def find_offenders(root, files):
    offenders = []
    for rel in files:
        if rel == SELF:
            continue
        path = os.path.join(root, rel)
        if not os.path.isfile(path):  # deleted in the work tree, not yet committed
            continue
        with open(path, "rb") as f:
            data = f.read()
        for pattern in OUTSIDE:
            at = data.find(pattern.encode())
            if at >= 0:
                line = data.count(b"\n", 0, at) + 1
                offenders.append(f"{rel}:{line}: {pattern}")
    return offenders


def test_no_tracked_file_points_outside_the_repository():
    offenders = find_offenders(ROOT, tracked_files())
    assert not offenders, "references outside the repository:\n" + "\n".join(offenders)


def test_the_scan_names_file_line_and_pattern(tmp_path):
    (tmp_path / "ok.py").write_text("FIXTURES = 'tests/fixtures/legacy-daq'\n")
    (tmp_path / "bad.py").write_text("import os\nP = os.path.join('..', 'x')\nQ = '../" + "shared/fixtures/legacy-daq'\n")
    assert find_offenders(str(tmp_path), ["ok.py", "bad.py", "gone.py"]) == [
        "bad.py:3: ../shared", "bad.py:3: shared/fixtures"]


def legacy_sections():
    with open(os.path.join(ROOT, "docs", "legacy.md"), encoding="utf-8") as f:
        return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", f.read(), re.M))


def test_every_cited_legacy_section_exists():
    """"docs/legacy.md §2.6" in a comment or doc names a section that is there."""
    sections = legacy_sections()
    assert {"1.2", "1.8", "2.5", "2.6", "3", "4.1", "8.3"} <= sections
    missing = []
    for rel in tracked_files():
        path = os.path.join(ROOT, rel)
        if rel == SELF or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        for m in re.finditer(r"legacy\.md((?:,?\s*§\s*\d+(?:\.\d+)?)+)", text):
            for sec in re.findall(r"§\s*(\d+(?:\.\d+)?)", m.group(1)):
                if sec not in sections:
                    missing.append(f"{rel}: §{sec}")
    assert missing == []
