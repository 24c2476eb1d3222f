"""Issue 17: `tsrmon simulate --full-rate` and the demo's full-rate machine
send signals whose spectra show the faults (analytic checks through the
analytics core), and the --demo configuration carries their metadata."""

import math

import numpy as np
import pytest

from tsrmon import simulate
from tsrmon.analytics import meta, spectrum
from tsrmon.analytics.envelope import EnvelopeSpectrum
from tsrmon.analytics.features import features
from tsrmon.config import build_config
from tsrmon.daqside.demo import DEMO_FULL_RATE
from tsrmon.daqside.waveforms import FaultModel, SignalModel
from tsrmon.service import demo_config


def test_demo_fan_signal_shows_unbalance_misalignment_and_bpfo(tmp_path):
    spec = DEMO_FULL_RATE["CoolingFan"]
    rate, rpm = spec["rate"], spec["rpm"]
    model = FaultModel(rate, rpm, spec["faults"])
    x = np.concatenate([model.read(rate) for _ in range(30)])   # 30 one-second chunks
    cfg = demo_config(build_config({"DATABASE": {"PATH": "db"}, "DATA": {"PATH": "d"},
                                    "LOGGER": {"PATH": "l"}}, None, str(tmp_path)))
    sm = meta.resolve("CoolingFan", "fan_vib", "VIB", cfg.sensors)
    assert (sm.rate, sm.unit, sm.rpm) == (8192, "g", 1480.0) and sm.sources["rpm"] == "config"
    welch = spectrum.WelchSpectrum(rate)
    welch.feed(x)
    env = EnvelopeSpectrum(rate, band=sm.envelope_band, env_fmax=500)
    env.feed(x)
    f = features(welch.take_fine(), sm, env.take_fine())
    fr = rpm / 60
    assert f["peaks"][0][0] == pytest.approx(fr, abs=0.5)            # unbalance: 1× strongest
    assert f["orders"]["2"][1] == pytest.approx(0.03 / math.sqrt(2), rel=0.05)   # misalignment 2×
    bpfo = f["bearing"]["bpfo"][0]
    assert bpfo[1] == pytest.approx(3.585 * fr, rel=0.02)
    assert bpfo[2] > 10 * f["bearing"]["bpfi"][0][2]                 # outer race, not inner
    assert 1.4 < f["velocity_rms"] < 7.1 and f["iso"]["zone"] in ("B", "C")
    # High crest factor from the bearing strikes.
    crest = np.max(np.abs(x)) / math.sqrt(np.mean(x * x))
    assert crest > 4


def test_cli_full_rate_frames_carry_rate_unit_rpm_in_json():
    args = simulate.parse_args(["--full-rate", "25600", "--fault", "outer_race", "--json",
                                "--rate", "2", "--sensors", "2"])
    sim = simulate.simulator_from_args(None, args)
    model = SignalModel(sim.machines["SimMachine1"], args.rate, args.chunk, 0,
                                 full_rate=args.full_rate, rpm=args.rpm, faults=tuple(args.fault),
                                 meta_fields=True)
    frame = model.frame()
    vib, temp = frame["m1_vib1"], frame["m1_temp"]
    assert len(vib["data"]) == 12800 and (vib["rate"], vib["unit"], vib["rpm"]) == (25600.0, "g", 1480.0)
    assert len(temp["data"]) == args.chunk and "rate" not in temp
    assert sim.full_rate["SimMachine1"]["faults"] == ("outer_race",)
    with pytest.raises(SystemExit):
        simulate.parse_args(["--fault", "unbalance"])       # needs --full-rate
