"""Server-side alarm rules: thresholds with hysteresis and duration, ISO 10816-3
zones, silent DAQs, flat-lined sensors and dropped frame rates.

``rules.parse_rules`` checks ``ALARM.RULES``; ``service.AlarmService`` is the
room.  Nothing is imported here, so configuration validation can import
``tsrmon.alarms.rules`` without loading Twisted services.
"""
