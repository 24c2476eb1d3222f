"""docs/security.md lists every DAQ limit with its key and default (issue 15),
and every default it states is the one the code has."""

import os
import re

import pytest

from tsrmon.config import build_config
from tsrmon.ingest.settings import DaqSettings

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "security.md")
ROW = re.compile(r"^\| (`[A-Z]+\.[A-Z_]+`(?: / `[A-Z]+\.[A-Z_]+`)*) \| ([^|]+) \|", re.M)
UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "s": 1}


def _value(text):
    """A default as the page writes it: `[]` (any), `{}`, 2,000,000, 64 MiB, 10 s."""
    text = text.strip()
    if text.startswith("`[]`"):
        return []
    if text.startswith("`{}`"):
        return {}
    m = re.fullmatch(r"([\d,]+)(?: (KiB|MiB|GiB|s))?", text)
    assert m, f"unreadable default {text!r}"
    return int(m.group(1).replace(",", "")) * UNITS.get(m.group(2), 1)


def documented():
    """{"DAQ.NAME_TIMEOUT": 10, ...} from every "| `KEY` | default |" row."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    out = {}
    for keys, defaults in ROW.findall(text):
        names = [k.strip("` ") for k in keys.split(" / ")]
        values = [v for v in defaults.split(" / ")]
        assert len(names) == len(values), (keys, defaults)
        for name, value in zip(names, values):
            out[name] = _value(value)
    return out


def test_every_daq_limit_has_a_row():
    rows = documented()
    missing = [f"DAQ.{k}" for k in DaqSettings.settings() if f"DAQ.{k}" not in rows]
    assert missing == []


@pytest.mark.parametrize("key", sorted(documented()))
def test_the_documented_default_is_the_codes(tmp_path, key):
    config = build_config({}, None, str(tmp_path))
    section, name = key.split(".")
    actual = getattr(getattr(config, section.lower()), name.lower())
    assert documented()[key] == actual, (key, actual)
