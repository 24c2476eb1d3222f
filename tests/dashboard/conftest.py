"""Fixtures of the browser tests (see helpers.py)."""

import os

import pytest

from tests.conftest import require_service
from tests.dashboard.helpers import ARTIFACTS, HERE, chromium, ensure_build, ensure_npm


@pytest.fixture(scope="session")
def browser_ready():
    require_service(chromium(), "Debian's chromium is not installed (apt-get install chromium; "
                                "the README's test command installs it)")
    for problem in (ensure_npm(HERE, "playwright-core"), ensure_build()):
        require_service(problem is None, problem)
    os.makedirs(ARTIFACTS, exist_ok=True)
