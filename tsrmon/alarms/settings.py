"""The alarm room's section, ALARM: the configured rules.  Checked once at
load (:mod:`tsrmon.config`): a bad rule stops start-up (and a SIGHUP
reload) like any bad key; ``config.alarm.parsed`` holds the rules as
:func:`tsrmon.alarms.rules.parse_rules` made them (built-ins included)."""

import attrs

from tsrmon.alarms.rules import parse_rules
from tsrmon.config.checks import any_list
from tsrmon.config.section import Section, setting


@attrs.frozen
class AlarmSettings(Section):
    SECTION = "ALARM"

    rules: list = setting("RULES", [], any_list)
    # Not a YAML key: filled by finish(), not compared.
    parsed: tuple | None = attrs.field(default=None, eq=False, repr=False)

    def finish(self, source):
        return attrs.evolve(self, parsed=tuple(parse_rules(self.rules, source)))

    def rule_objects(self, source=None):
        """The parsed rules (parsing now if this section was not finished)."""
        return list(self.parsed) if self.parsed is not None else parse_rules(self.rules, source)
