"""An incident's kind in words wherever it is shown (the ack link's page, the API's ``kind_label``, pager texts,
timelines): a consumable's incident names the consumable, never its code (``toner:black`` on a Chinese page
was seen on the pager's acknowledgement page)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from broker.api.fleet_words import incident_kind_label
from broker.rules.incidents import kind_label

CONSUMABLE_KINDS = [
    "consumable.toner:black",
    "consumable.toner:cyan",
    "consumable.a4_paper:1",
    "consumable.thermal_paper",
]
CODE = re.compile(r"[a-z0-9_]+:[a-z0-9_]+|[a-z]+_[a-z_]+")  # a consumable's or a kind's code, as stored


@pytest.mark.parametrize("kind", CONSUMABLE_KINDS)
@pytest.mark.parametrize("words", [kind_label, incident_kind_label])
def test_a_consumables_incident_is_named_in_words_in_chinese(kind: str, words: Callable[[str, str], str]) -> None:
    label = words(kind, "zh-CN")
    assert not CODE.search(label), label
    assert label.startswith("耗材: "), label


@pytest.mark.parametrize("kind", CONSUMABLE_KINDS)
def test_the_english_label_has_no_chinese_and_both_helpers_agree(kind: str) -> None:
    en = kind_label(kind, "en")
    assert en == incident_kind_label(kind, "en")
    assert not re.search(r"[\u4e00-\u9fff]", en), en
    assert en.startswith("consumable: "), en


def test_the_toner_is_named_with_its_colour() -> None:
    assert kind_label("consumable.toner:black", "zh-CN") == "耗材: 硒鼓（黑色）"
    assert kind_label("consumable.toner:black", "en") == "consumable: toner (black)"
