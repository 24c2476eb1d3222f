"""bench/analytics.py runs and prints its table (numbers are not asserted)."""

import re

from bench import analytics


def test_benchmark_prints_every_row(capsys):
    analytics.main(["--seconds", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (.+?) \| ([\d,]+) \| [\d,]+ \| (.+?) \|$", out, re.M)
    names = [r[0] for r in rows]
    assert names[0].startswith("yardstick") and len(names) == 9
    assert all(int(r[1].replace(",", "")) > 0 for r in rows)
    assert "once a minute" in out and "keeps up with" in out
