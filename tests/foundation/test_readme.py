"""The README's commands work pasted into a fresh shell (issue 14): every
command names ``.venv/bin/…`` (nothing assumes an activated venv), every
twistd command turns the pidfile off, and ``.ci/run`` runs exactly the
README's test command."""

import os
import re
import shlex
import subprocess

import pytest

from tests.conftest import ROOT

README = os.path.join(ROOT, "README.md")
CI_RUN = os.path.join(ROOT, ".ci", "run")
# Programs that only exist inside the virtual environment.
VENV_ONLY = {"tsrmon", "twistd", "pip", "pip3", "pytest", "python"}


def readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def sh_blocks(text):
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def commands(block):
    """Each simple command of a block: split at && || ; | ( ), comments dropped."""
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;|\||\(|\)", line):
            words = shlex.split(part)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
                words.pop(0)
            if words:
                yield words


def bare_venv_programs(text):
    bad = []
    for block in sh_blocks(text):
        for words in commands(block):
            prog = words[0]
            if prog in VENV_ONLY:
                bad.append(" ".join(words))
            if prog in ("python3",) and words[1:3] != ["-m", "venv"]:
                bad.append(" ".join(words))  # the system python only creates the venv
    return bad


def twistd_without_pidfile_off(text):
    spans = [b for b in sh_blocks(text)] + re.findall(r"`([^`\n]*twistd[^`\n]*)`", text)
    bad = []
    for span in spans:
        for line in span.splitlines():
            for m in re.finditer(r"twistd\s[^&;|#]*", line):
                if "--pidfile=" not in m.group(0).split():
                    bad.append(m.group(0).strip())
    return bad


def test_every_command_names_the_venv():
    assert bare_venv_programs(readme()) == []


def test_every_twistd_command_leaves_no_pidfile():
    text = readme()
    assert "twistd" in text
    assert twistd_without_pidfile_off(text) == []


def test_the_two_opening_commands_and_ci_runs_the_test_command():
    blocks = sh_blocks(readme())
    run, test = blocks[0].strip(), blocks[1].strip()
    assert "--demo" in run and ".venv/bin/twistd" in run
    assert test.startswith("python3 -m venv .venv") and test.endswith(".venv/bin/python -m pytest -q")
    assert ".ci/install-test-deps" in test
    with open(CI_RUN, encoding="utf-8") as f:
        ci = f.read()
    assert test in ci.splitlines()


def test_the_checks_catch_what_they_should():
    text = "```sh\ntwistd -n tsrmon\ntsrmon backup x && FOO=1 .venv/bin/tsrmon check-config y\n```\n"
    assert bare_venv_programs(text) == ["twistd -n tsrmon", "tsrmon backup x"]
    assert twistd_without_pidfile_off(text) == ["twistd -n tsrmon"]
    assert twistd_without_pidfile_off("run `twistd -ny tsrmon.tac` here") == ["twistd -ny tsrmon.tac"]
    assert twistd_without_pidfile_off("`.venv/bin/twistd -n --pidfile= tsrmon`") == []


def test_gitignore_covers_what_documented_commands_leave():
    """A twistd run without ``--pidfile=`` (or the demo's relative folders)
    still leaves nothing git would offer to commit."""
    names = ["twistd.pid", "twistd.log", "db/M.db", "data/M/20260101_vib.csv", "log/tsrmon.20260101.log"]
    try:
        done = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    except OSError:
        pytest.skip("git is not installed")
    if done.returncode not in (0, 1):
        pytest.skip(f"not a git checkout ({done.stderr.strip()})")
    assert sorted(done.stdout.split()) == sorted(names)
