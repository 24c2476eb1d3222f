"""Every label the dashboard uses exists in English and in Korean."""

import os
import re

from tests.conftest import ROOT

SRC = os.path.join(ROOT, "dashboard", "src")


def _labels():
    with open(os.path.join(SRC, "i18n.js"), encoding="utf-8") as f:
        text = f.read()
    en = text[text.index("  en: {"):text.index("  ko: {")]
    ko = text[text.index("  ko: {"):text.index("\n};")]
    key = re.compile(r"(\w+): \"")
    return set(key.findall(en)), set(key.findall(ko)), ko


def _used():
    used = set()
    for folder, _, files in os.walk(SRC):
        for name in files:
            if name.endswith(".js"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    used |= set(re.findall(r"\bt\(\"(\w+)\"", f.read()))
    # Keys named indirectly: t(`conn_${state}`) and t(level).
    used |= {f"conn_{s}" for s in ("connected", "connecting", "reconnecting", "offline")}
    used |= {"hour", "day", "month", "year"}
    return used


def test_both_languages_have_the_same_labels():
    en, ko, _ = _labels()
    assert en and en == ko


def test_every_label_used_in_the_source_exists():
    en, _, _ = _labels()
    used = _used()
    assert len(used) > 40
    assert used - en == set()


def test_korean_labels_are_korean():
    _, _, ko = _labels()
    hangul = re.findall(r"[\uac00-\ud7a3]", ko)
    assert len(hangul) > 200
