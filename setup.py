"""Metadata is in setup.cfg; this file only makes the package build run the
dashboard build (``npm ci && npm run build`` in dashboard/) when its output
is missing, so a wheel always carries the built assets when npm is there."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithDashboard(build_py):
    def run(self):
        built = os.path.join(HERE, "tsrmon", "dashboard", "static", "index.html")
        npm = shutil.which("npm")
        if not os.path.exists(built) and npm and os.path.isdir(os.path.join(HERE, "dashboard")):
            cwd = os.path.join(HERE, "dashboard")
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=cwd, check=True)
            subprocess.run([npm, "run", "build"], cwd=cwd, check=True)
        elif not os.path.exists(built):
            self.announce("dashboard not built (no npm): the daemon will explain at /", level=3)
        super().run()


setup(cmdclass={"build_py": BuildWithDashboard})
