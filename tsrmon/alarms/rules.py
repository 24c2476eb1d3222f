"""Alarm rules, the one import point for the rest of tsrmon and the tests.

What a rule is and how it judges a value lives in ``rule_model.py``; what
``ALARM.RULES`` may say and how it becomes rules, in ``rule_parsing.py``.
Both are re-exported here so callers keep ``from tsrmon.alarms.rules import
parse_rules, Rule, ...``; nothing in this module imports Twisted.
"""

from tsrmon.alarms.rule_model import (BEARING_DEFECTS, BUILTIN_KINDS, DAQ_SILENT,  # noqa: F401
                                      FEATURE_METRICS, FLATLINE, MAX_DURATION, MAX_WINDOW, METRICS,
                                      MIN_WINDOW, MOMENT_METRICS, RATE_DROP, SEVERITIES, THRESHOLD,
                                      Rule, duration_text, feature_value, is_feature_metric, render)
from tsrmon.alarms.rule_parsing import (BUILTIN_DEFAULTS, ISO_10816_3, PRESETS,  # noqa: F401
                                        THRESHOLD_MESSAGE, _Bad, parse_duration, parse_rules)
