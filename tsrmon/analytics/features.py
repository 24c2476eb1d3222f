"""Per-minute features of one sensor from its spectra (what ``/features``
and the alarm rules read): velocity RMS, band RMS, peaks, orders, bearing
tones.  Every figure is a plain float (JSON-ready); missing inputs leave a
figure out and say why in ``notes`` rather than guess."""

from tsrmon.analytics import iso10816, meta as _meta
from tsrmon.analytics.envelope import bearing_tones
from tsrmon.analytics.spectrum.readings import band_rms, orders, peaks, velocity_rms


def velocity_mm_s(spec, unit, rpm=None):
    """ISO velocity RMS (mm/s) from a spectrum in ``unit``, or raise
    ValueError saying why it cannot be had."""
    why = iso10816.velocity_refusal(spec.rate, unit)
    if why:
        raise ValueError(why)
    lo, hi = iso10816.band_for_rpm(rpm)
    if _meta.quantity(unit) == "velocity":
        return band_rms(spec, lo, hi) * _meta.to_mm_s(unit)
    return velocity_rms(spec, _meta.to_mm_s2(unit), lo, hi)


def features(spec, sensor_meta, env_spec=None, top=5, harmonics=3):
    """``{velocity_rms, bands, peaks, orders, bearing, iso, notes}`` of one
    spectrum (a minute's lines or fine bins) of a sensor.

    ``velocity_rms`` mm/s; ``bands`` ``{name: rms}``; ``peaks`` ``[[Hz, rms]]``
    highest first; ``orders`` ``{"1": [Hz, rms], …}``; ``bearing``
    ``{"bpfo": [[harmonic, Hz, rms], …], …}`` from the envelope spectrum;
    ``iso`` :meth:`~tsrmon.analytics.iso10816.Judgement.as_dict`; ``notes``
    why a figure is missing."""
    out = {"notes": []}
    unit = sensor_meta.unit
    try:
        v = velocity_mm_s(spec, unit, sensor_meta.rpm)
        out["velocity_rms"] = v
    except ValueError as e:
        v = None
        out["notes"].append("velocity_rms: %s" % e)
    out["iso"] = iso10816.judge(v, spec.rate, unit, sensor_meta.group or 2,
                                sensor_meta.foundation or "rigid").as_dict()
    if sensor_meta.bands:
        out["bands"] = {name: band_rms(spec, lo, hi)
                        for name, (lo, hi) in sensor_meta.bands.items()}
    out["peaks"] = [[f, a] for f, a in peaks(spec, top)]
    if sensor_meta.rpm:
        out["orders"] = {str(k): [f, a] for k, (f, a) in
                         orders(spec, sensor_meta.rpm, range(1, harmonics + 1)).items()}
    else:
        out["notes"].append("orders: running speed (rpm) unknown")
    if sensor_meta.bearing and sensor_meta.rpm and env_spec is not None:
        tones = bearing_tones(env_spec, sensor_meta.rpm, sensor_meta.bearing, harmonics)
        out["bearing"] = {name: [[h, f, a] for h, f, a in rows] for name, rows in tones.items()}
    elif sensor_meta.bearing:
        out["notes"].append("bearing: needs rpm and an envelope spectrum")
    return out
