"""Server-side alarm rules: thresholds with hysteresis and duration, ISO 10816-3
zones, silent DAQs, flat-lined sensors and dropped frame rates.

``rules.parse_rules`` checks ``ALARM.RULES`` (``rule_model.py``: what a rule
is; ``rule_parsing.py``: reading the configuration); ``service.AlarmService``
is the room (``machine_rules.py``, ``feature_rules.py`` and ``emission.py``
hold its machine rules, per-minute spectra rules and raise/clear outputs).
Nothing is imported here, so configuration validation can import
``tsrmon.alarms.rules`` without loading Twisted services.
"""
