"""tests/fixtures/make_legacy.py reproduces the committed DAQ fixtures exactly
(issue 14: the repository is the whole project, fixtures included)."""

import json
import os
import struct
import subprocess
import sys

from tests.conftest import ROOT
from tests.fixtures import make_legacy

COMMITTED = os.path.join(ROOT, "tests", "fixtures", "legacy-daq")


def test_script_rewrites_every_committed_file_byte_for_byte(tmp_path):
    # As a user would run it: a fresh interpreter, output to an empty folder.
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fixtures", "make_legacy.py"), str(tmp_path)],
                   check=True, stdout=subprocess.DEVNULL, timeout=60)
    made = sorted(os.listdir(tmp_path))
    committed = sorted(n for n in os.listdir(COMMITTED) if n != "README.md")
    assert made == committed
    for name in made:
        if name == "expected.json":
            continue
        with open(tmp_path / name, "rb") as a, open(os.path.join(COMMITTED, name), "rb") as b:
            assert a.read() == b.read(), f"{name} differs from what make_legacy.py writes"
    with open(tmp_path / "expected.json", encoding="utf-8") as a, \
            open(os.path.join(COMMITTED, "expected.json"), encoding="utf-8") as b:
        assert json.load(a) == json.load(b)


def test_session_properties():
    files, exp = make_legacy.build()
    data, entry = files["session.bin"], exp["session.bin"]
    assert entry["bytes"] == len(data)
    kinds = [m[0] for m in entry["messages"]]
    assert kinds.count("DataUpdate") == 120 and kinds.count("FaultDetect") == 3
    # Frame 8 carries a float whose bytes hold the terminator; no other frame does.
    hits = [i for i, m in enumerate(entry["messages"]) if m[0] == "DataUpdate"
            for body in m[1].values() for x in body["data"] if b"\x5c\x6f" in struct.pack(">d", x)]
    assert hits == [8]
    assert entry["anomalies_over_threshold"] == 1
    # The per-sensor truth is the arithmetic over the frames' samples.
    vib1 = [x for m in entry["messages"][1:] if m[0] == "DataUpdate" for x in m[1]["shot_blast_vib1"]["data"]]
    assert entry["per_sensor"]["shot_blast_vib1"]["n"] == len(vib1) == 3600
    assert entry["per_sensor"]["shot_blast_vib1"]["sum_abs"] == sum(abs(x) for x in vib1)


def test_evil_frames_are_raw_bytes_with_an_import_opcode():
    files, _ = make_legacy.build()
    for name, evil in make_legacy.EVIL.items():
        assert evil in files[name]
        assert b"system" in evil or b"eval" in evil
