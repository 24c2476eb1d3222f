"""Fixtures of the browser tests (see helpers.py)."""

import os

import pytest

from tests.conftest import require_service
from tests.dashboard.helpers import ARTIFACTS, HERE, build_problem, chromium, npm_problem


@pytest.fixture(scope="session")
def browser_ready():
    require_service(chromium(), "Debian's chromium is not installed (apt-get install chromium; "
                                ".ci/install-test-deps installs it)")
    for problem in (npm_problem(HERE, "playwright-core"), build_problem()):
        require_service(problem is None, problem)
    os.makedirs(ARTIFACTS, exist_ok=True)
