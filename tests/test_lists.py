"""Parsing top-5 answers: items, numbering, extra text, duplicates, and the exact problems reported."""
from __future__ import annotations

import pytest

from core.lists import format_list, item_key, parse_list

CLEAN = """1. Roast turkey - the classic centrepiece
2. Mashed potatoes
3. Sage and onion stuffing
4. Green beans with almonds
5. Pumpkin pie"""
CLEAN_ITEMS = ["Roast turkey - the classic centrepiece", "Mashed potatoes", "Sage and onion stuffing",
               "Green beans with almonds", "Pumpkin pie"]


def numbered(items: list[str], marker: str = "{n}.") -> str:
    return "\n".join(f"{marker.format(n=n)} {item}" for n, item in enumerate(items, start=1))


def test_clean_list_is_well_formed():
    parsed = parse_list(CLEAN)
    assert parsed.items == CLEAN_ITEMS
    assert parsed.numbers == [1, 2, 3, 4, 5]
    assert parsed.preamble == "" and parsed.closing == ""
    assert parsed.duplicates == []
    assert parsed.problems == []
    assert parsed.well_formed


@pytest.mark.parametrize("marker", ["{n})", "**{n}.**", "#{n}:"], ids=["paren", "bold", "hash"])
def test_other_number_markers_parse_like_plain_ones(marker):
    parsed = parse_list(numbered(CLEAN_ITEMS, marker))
    assert parsed.items == CLEAN_ITEMS
    assert parsed.numbers == [1, 2, 3, 4, 5]
    assert parsed.well_formed


def test_bold_item_text_keeps_balanced_markdown():
    # "1. **Turkey** - ..." is how instruction-tuned models usually bold a list. The marker regex's optional
    # closing "**" (meant for "**1.**") eats the *opening* bold of the item, leaving "Roast turkey** - ...".
    parsed = parse_list(numbered(["**Roast turkey** - the classic", "**Mashed potatoes**", "**Stuffing**",
                                  "**Green beans**", "**Pumpkin pie**"]))
    assert parsed.well_formed  # the form is fine either way; only the displayed text is damaged
    for item in parsed.items:
        assert item.count("**") % 2 == 0, f"unbalanced bold markers in parsed item {item!r}"


def test_preamble_is_kept_and_reported():
    parsed = parse_list("Sure! Here are five dishes for a festive dinner:\n\n" + CLEAN)
    assert parsed.items == CLEAN_ITEMS
    assert parsed.preamble == "Sure! Here are five dishes for a festive dinner:"
    assert parsed.problems == ["text before the first item"]
    assert not parsed.well_formed


def test_closing_remark_after_blank_line_is_kept_and_reported():
    parsed = parse_list(CLEAN + "\n\nEnjoy your dinner!\nLet me know if you want more.")
    assert parsed.items == CLEAN_ITEMS  # the last item does not swallow the closing text
    assert parsed.closing == "Enjoy your dinner!\nLet me know if you want more."
    assert parsed.problems == ["text after the last item"]


def test_preamble_and_closing_are_both_reported():
    parsed = parse_list("Here you go:\n" + CLEAN + "\n\nEnjoy!")
    assert parsed.problems == ["text before the first item", "text after the last item"]


def test_four_items():
    parsed = parse_list(numbered(CLEAN_ITEMS[:4]))
    assert parsed.items == CLEAN_ITEMS[:4]
    assert parsed.problems == ["has 4 items, expected 5"]


def test_six_items_numbered_in_order_only_reports_the_count():
    parsed = parse_list(numbered(CLEAN_ITEMS + ["Cranberry sauce"]))
    assert len(parsed.items) == 6
    assert parsed.numbers == [1, 2, 3, 4, 5, 6]
    assert parsed.problems == ["has 6 items, expected 5"]


def test_bullets_are_items_but_not_numbered():
    parsed = parse_list("- Roast turkey\n* Mashed potatoes\n\u2022 Stuffing\n- Green beans\n- Pumpkin pie")
    assert parsed.items == ["Roast turkey", "Mashed potatoes", "Stuffing", "Green beans", "Pumpkin pie"]
    assert parsed.bulleted
    assert parsed.problems == ["items are bullets, not numbered"]


def test_numbers_win_over_bullets_when_both_appear():
    # Sub-bullets under numbered items are continuation text, not items of their own.
    parsed = parse_list("1. Roast turkey\n   - with gravy\n2. b\n3. c\n4. d\n5. e")
    assert not parsed.bulleted
    assert parsed.items[0] == "Roast turkey - with gravy"
    assert parsed.well_formed


def test_duplicates_differing_in_case_punctuation_and_reason():
    parsed = parse_list(numbered(["Roast turkey - classic", "roast turkey: the best", "ROAST TURKEY!",
                                  "Green beans", "Pumpkin pie"]))
    assert len(parsed.items) == 5
    assert parsed.duplicates == ["roast turkey"]  # reported once however often it repeats
    assert parsed.problems == ["duplicate item: roast turkey"]


def test_items_sharing_a_first_word_are_not_duplicates():
    parsed = parse_list(numbered(["Roast turkey", "Roast potatoes", "Roast parsnips", "Green beans", "Pie"]))
    assert parsed.duplicates == []
    assert parsed.well_formed


@pytest.mark.parametrize("item,key", [
    ("Roast turkey - classic", "roast turkey"),
    ("roast turkey: the best", "roast turkey"),
    ("Roast Turkey!", "roast turkey"),
    ("**Roast turkey** \u2013 golden", "roast turkey"),
    ("Pumpkin pie (with cream)", "pumpkin pie"),
    ("  Green beans  ", "green beans"),
])
def test_item_key_is_the_normalised_head(item, key):
    assert item_key(item) == key


def test_wrong_numbering_order():
    parsed = parse_list(numbered(CLEAN_ITEMS).replace("3. Sage", "2. Sage"))
    assert parsed.numbers == [1, 2, 2, 4, 5]
    assert parsed.items == CLEAN_ITEMS
    assert parsed.problems == ["items are not numbered 1 to 5 in order"]


def test_wrapped_item_stays_one_item():
    text = ("1. Roast turkey - the classic centrepiece,\n   basted every half hour\n2. Mashed potatoes\n"
            "3. Stuffing\n4. Green beans\n5. Pumpkin pie,\n   served with whipped cream")
    parsed = parse_list(text)
    assert parsed.items == ["Roast turkey - the classic centrepiece, basted every half hour", "Mashed potatoes",
                            "Stuffing", "Green beans", "Pumpkin pie, served with whipped cream"]
    assert parsed.closing == ""
    assert parsed.well_formed


def test_continuation_line_starting_with_a_decimal_is_not_a_new_item():
    # Markdown needs a space after "1." for a list marker; "1.5 cups" is text wrapping on from the item above.
    text = "1. Pancakes, made with\n   1.5 cups of flour\n2. Waffles\n3. Crepes\n4. Scones\n5. Muffins"
    parsed = parse_list(text)
    assert parsed.items[0] == "Pancakes, made with 1.5 cups of flour"
    assert parsed.numbers == [1, 2, 3, 4, 5]


def test_empty_item_is_reported():
    parsed = parse_list("1. Roast turkey\n2.\n3. Stuffing\n4. Green beans\n5. Pumpkin pie")
    assert parsed.items[1] == ""
    assert parsed.problems == ["an item is empty"]


@pytest.mark.parametrize("text", ["", "   \n\n  "])
def test_empty_text(text):
    parsed = parse_list(text)
    assert parsed.items == [] and parsed.preamble == "" and parsed.closing == ""
    assert parsed.problems == ["has 0 items, expected 5"]


def test_text_without_a_list_is_all_preamble():
    text = "I'm sorry, I can't think of five dishes right now."
    parsed = parse_list(text)
    assert parsed.items == []
    assert parsed.preamble == text
    assert parsed.problems == ["has 0 items, expected 5", "text before the first item"]


def test_format_list_numbers_and_strips_items():
    assert format_list(["  Roast turkey ", "Pie"]) == "1. Roast turkey\n2. Pie"
    assert format_list([]) == ""


def test_format_then_parse_round_trips():
    parsed = parse_list(format_list(CLEAN_ITEMS))
    assert parsed.items == CLEAN_ITEMS
    assert parsed.well_formed
