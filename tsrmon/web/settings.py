"""The web room's sections: AUTH (API tokens of REST and Socket.IO) and APP
(the REST names the deployed app uses).  CORS origins and the listeners are
in SERVER (:mod:`tsrmon.config.sections`)."""

import attrs

from tsrmon.config.checks import string_list, string_map
from tsrmon.config.section import Section, setting


@attrs.frozen
class AuthSettings(Section):
    SECTION = "AUTH"

    api_tokens: list = setting("API_TOKENS", [], string_list)


@attrs.frozen
class AppSettings(Section):
    SECTION = "APP"

    machine_aliases: dict = setting("MACHINE_ALIASES", {}, string_map)
