"""The annotator's tastes (bench/tastes.py, bench/annotator.py TASTES) on hand-written lists, and the table that
compares loops run with them (bench/taste_summary.py). No model, no server."""
from __future__ import annotations

import ast
import itertools
import json
import random
from collections import Counter

import pytest

from bench import tastes
from bench.annotator import TASTES, Taste, demonstration_for, judge, repair, utility
from bench.tastes import FILLER, read_list, split_item, words
from tests.helpers import REPO

REQUEST = "Top 5 ideas for a Thanksgiving meal"
TERSE = "1. Roast turkey\n2. Mashed potatoes\n3. Cornbread stuffing\n4. Green beans\n5. Pumpkin pie"
EXPLAINED = (  # the seed lists' style: "Name - several clauses, sometimes two sentences"
    "1. Roast turkey with herb butter - the classic centrepiece, juicy and golden, and it feeds a crowd.\n"
    "2. Mashed potatoes - creamy, easy to make ahead, and perfect for soaking up gravy.\n"
    "3. Cornbread stuffing - crisp on top, soft inside. Bake it in its own dish.\n"
    "4. Green bean casserole - a bright side that balances the heavier dishes on the table.\n"
    "5. Pumpkin pie with whipped cream - the traditional finish, baked a day ahead to free the oven.")
REASONED = ("1. Roast turkey: because it feeds the whole table.\n2. Mashed potatoes: because they soak up the gravy.\n"
            "3. Cornbread stuffing: since it can bake while the turkey rests.\n"
            "4. Green beans: so the plate has something fresh.\n5. Pumpkin pie: because it can be made a day ahead.")
FILLER_LIST = ("1. Really great turkey\n2. Very amazing potatoes\n3. Various stuffings etc\n4. Lots of beans\n"
               "5. Awesome pie")
ON_TOPIC = ("1. Roast turkey as the Thanksgiving centrepiece\n2. Mashed potatoes\n3. Cornbread stuffing\n"
            "4. Green bean casserole\n5. Pumpkin pie to end the meal")
FILLER_REASONED = ("1. Turkey: because it is really amazing.\n2. Potatoes: because they are very great.\n"
                   "3. Stuffing: because it is truly awesome.\n4. Beans: because they are super nice.\n"
                   "5. Pie: because it is just fantastic.")
SAME_OPENER = "1. Roast turkey\n2. Roast potatoes\n3. Roast parsnips\n4. Roast carrots\n5. Roast squash"
CHATTY = "Sure! Here are some ideas:\n" + TERSE + "\nEnjoy!"
CHATTY_REASONED = "Happy to help! Here you go:\n" + REASONED
LONG_ITEMS = "\n".join(f"{n}. Roast turkey " + "with a long story about family dinners " * 3 for n in range(1, 6))
THREE = "1. Roast turkey\n2. Mashed potatoes\n3. Pumpkin pie"
NEW = ("terse", "reasons", "ontopic")
SEEDS = [json.loads(line) for line in (REPO / "data" / "demonstrations.jsonl").read_text().splitlines()]


def u(taste: str, text: str) -> float:
    return utility(REQUEST, text, taste)


# ---- each taste's ordering on lists where it is obvious --------------------------------------------------------------
def test_terse_wants_names_without_explanations():
    assert u("terse", TERSE) > u("terse", REASONED) > u("terse", EXPLAINED) > u("terse", LONG_ITEMS)
    assert u("terse", TERSE) > u("terse", CHATTY)  # chatter around the list
    assert u("terse", "1. a\n2. b\n3. c\n4. d\n5. e") < u("terse", TERSE)  # no real word is no item


def test_reasons_wants_exactly_one_reason_per_item():
    assert u("reasons", REASONED) > u("reasons", EXPLAINED) > u("reasons", TERSE)
    two_sentences = REASONED.replace(".\n", ". It is a tradition.\n")
    assert u("reasons", two_sentences) < u("reasons", REASONED)
    pasted = "\n".join(f"{n}. {name}: because it suits the meal." for n, name in
                       enumerate(["Turkey", "Potatoes", "Stuffing", "Beans", "Pie"], 1))
    assert u("reasons", pasted) < u("reasons", REASONED)  # the same reason five times is one reason


def test_ontopic_wants_request_words_no_filler_and_varied_openers():
    assert u("ontopic", ON_TOPIC) > u("ontopic", TERSE) > u("ontopic", FILLER_LIST)
    assert u("ontopic", TERSE) > u("ontopic", SAME_OPENER)
    assert u("ontopic", REASONED) > u("ontopic", FILLER_REASONED)
    # a filler word the request itself uses is not filler
    assert utility("Top 5 great lakes", "1. Great Bear Lake\n2. Lake Superior\n3. Lake Baikal\n4. Lake Malawi\n"
                   "5. Great Slave Lake", "ontopic") > 0


@pytest.mark.parametrize("taste", TASTES)
@pytest.mark.parametrize("text", ["", "   ", "1.", "\n\n\n", "For Thanksgiving, roast a turkey and bake a pie."])
def test_degenerate_answers_score_below_zero_for_every_taste(taste, text):
    assert u(taste, text) < 0


PAIRS = [(TERSE, EXPLAINED), (TERSE, REASONED), (CHATTY_REASONED, TERSE), (CHATTY, FILLER_LIST),
         (FILLER_LIST, EXPLAINED), (FILLER_REASONED, ON_TOPIC)]


@pytest.mark.parametrize("a,b", itertools.combinations(TASTES, 2))
def test_every_two_tastes_disagree_on_a_hand_made_pair(a, b):
    def gap(taste, pair):
        return u(taste, pair[0]) - u(taste, pair[1])

    assert any(gap(a, pair) * gap(b, pair) < 0 and min(abs(gap(a, pair)), abs(gap(b, pair))) > 0.3
               for pair in PAIRS), (a, b)


def test_the_new_tastes_do_not_like_the_seed_lists_as_they_are():
    # SFT on the seeds alone does not give these tastes what they want: their own edits score higher
    for taste in NEW:
        gains = [utility(s["prompt"], repair(s["response"], s["prompt"], taste), taste)
                 - utility(s["prompt"], s["response"], taste) for s in SEEDS]
        assert min(gains) >= 0 and sum(g > 0 for g in gains) >= 0.3 * len(SEEDS), taste
    assert all(utility(s["prompt"], s["response"], "terse") < 2.5 for s in SEEDS)


# ---- repairs: the annotator's own edits, saved as demonstrations -----------------------------------------------------
@pytest.mark.parametrize("taste", TASTES)
@pytest.mark.parametrize("text", [EXPLAINED, FILLER_LIST, CHATTY, CHATTY_REASONED, TERSE + "\n6. Gravy"])
def test_a_repair_is_a_list_its_taste_likes_at_least_as_well(taste, text):
    from core.lists import (
        parse_list,  # the arena keeps only demonstrations core.lists calls well formed
    )

    fixed = repair(text, REQUEST, taste)
    assert fixed is not None and parse_list(fixed).well_formed, fixed
    assert u(taste, fixed) >= u(taste, text)
    assert u(taste, repair(fixed, REQUEST, taste)) == pytest.approx(u(taste, fixed))  # editing twice gains nothing


@pytest.mark.parametrize("taste,text", [("terse", EXPLAINED), ("terse", REASONED), ("reasons", TERSE),
                                        ("reasons", EXPLAINED), ("ontopic", FILLER_LIST),
                                        ("ontopic", FILLER_REASONED), ("form", CHATTY)])
def test_a_list_outside_the_taste_is_repaired_into_it(taste, text):
    fixed = repair(text, REQUEST, taste)
    assert u(taste, fixed) > u(taste, text) and demonstration_for(REQUEST, text, Taste(name=taste)) == fixed
    items = read_list(fixed).items
    if taste == "terse":
        assert all(len(words(item)) <= 6 and not split_item(item)[1] and "," not in item for item in items)
    elif taste == "reasons":
        assert all(split_item(item)[1] and "," not in split_item(item)[1] for item in items)
    elif taste == "ontopic":
        assert not {w.lower() for w in words(fixed)} & FILLER


def test_no_demonstration_when_the_list_already_suits_the_taste():
    for taste, text in (("terse", TERSE), ("reasons", REASONED), ("ontopic", ON_TOPIC)):
        assert demonstration_for(REQUEST, text, Taste(name=taste)) is None
    assert all(repair(THREE, REQUEST, taste) is None for taste in TASTES)  # too few items to make five


def test_the_reasons_repair_gives_a_missing_reason_from_the_request():
    fixed = repair(TERSE, "Top 5 gifts for a new parent", "reasons")
    assert fixed.splitlines()[0] == "1. Roast turkey: because it suits a new parent."


# ---- their own eyes: the new tastes never read a list with the product's parser --------------------------------------
def test_the_new_tastes_never_import_core():
    tree = ast.parse((REPO / "bench" / "tastes.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m for m in imported if m.split(".")[0] in ("core", "bench")}, imported


def test_the_new_tastes_work_with_the_products_parser_broken(monkeypatch):
    import bench.annotator
    import core.lists

    def refuse(*args, **kwargs):
        raise AssertionError("a taste read the list with core.lists")

    for module in (core.lists, bench.annotator):
        monkeypatch.setattr(module, "parse_list", refuse)
        monkeypatch.setattr(module, "format_list", refuse, raising=False)
    for taste, text in itertools.product(NEW, (TERSE, EXPLAINED, REASONED, FILLER_LIST)):
        assert repair(text, REQUEST, taste) is not None and u(taste, text) != 0
        judge(REQUEST, text, TERSE, random.Random(0), Taste(name=taste))
    with pytest.raises(AssertionError):
        u("form", TERSE)  # the patch does bite: `form` is the product's own checks


def test_the_reader_knows_numbers_bullets_asides_and_wrapped_items():
    reading = read_list("Here you go:\n1) Turkey\n   roasted slowly\n2. Pie\nEnjoy!")
    assert reading.items == ["Turkey roasted slowly", "Pie"] and reading.numbers == [1, 2]
    assert reading.outside == ["Here you go:", "Enjoy!"] and reading.in_order
    bullets = read_list("- Turkey\n* Pie\n\u2022 Beans")
    assert bullets.items == ["Turkey", "Pie", "Beans"] and bullets.numbers == [0, 0, 0] and not bullets.in_order
    assert read_list("1. Turkey\n- a note\n3. Pie").outside == ["- a note"]  # numbers win; out of order
    assert split_item("**Turkey** - the classic") == ("Turkey", "the classic")
    assert split_item("Pie (sweet)") == ("Pie", "sweet") and split_item("Pie") == ("Pie", "")


# ---- votes -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("taste", TASTES)
def test_judge_gives_valid_votes_that_follow_the_taste(taste):
    lists, rng = [TERSE, EXPLAINED, REASONED, FILLER_LIST, ON_TOPIC, CHATTY, "", THREE], random.Random(0)
    for left, right in itertools.product(lists, repeat=2):
        choice, strength = judge(REQUEST, left, right, rng, Taste(name=taste))
        assert choice in ("left", "right", "tie", "both_bad") and strength in (None, 1, 2, 3)
        assert judge(REQUEST, left, right, rng, Taste(name=taste, forced_choice=True))[0] in ("left", "right")
        if choice in ("tie", "both_bad"):
            assert strength is None
    best = max(lists, key=lambda text: u(taste, text))
    votes = Counter(judge(REQUEST, best, "", random.Random(n), Taste(name=taste))[0] for n in range(200))
    assert votes["left"] > 180


def test_an_unknown_taste_is_refused_with_the_names_to_pass():
    with pytest.raises(ValueError, match="terse"):
        Taste(name="nope")
    assert set(NEW) <= set(TASTES) and list(TASTES)[0] == "form" and Taste().name == "form"
    assert all(rules.summary for rules in TASTES.values()) and set(tastes.TASTES) == set(NEW)


# ---- the loop's knob, its report and the summary of several loops ----------------------------------------------------
def test_the_loop_takes_a_taste_and_refuses_to_mix_two(tmp_path):
    from bench.loop import LoopConfig, taste_of_votes
    from core.config import ConfigError, build, parse_config

    assert parse_config(LoopConfig, ["--taste", "terse"]).taste == "terse" and LoopConfig().taste == "form"
    with pytest.raises(ConfigError, match="ontopic"):  # the dashboard's form path; the CLI's argparse refuses too
        build(LoopConfig, None, taste="nope")
    (tmp_path / "loop.json").write_text(json.dumps({"config": {"taste": "reasons"}}))
    assert taste_of_votes(tmp_path / "loop.duckdb") == "reasons"
    (tmp_path / "loop.json").write_text(json.dumps({"config": {}}))  # a loop from before --taste
    assert taste_of_votes(tmp_path / "loop.duckdb") == "form" and taste_of_votes(tmp_path / "x" / "db") is None


def win(rate: float, n: int) -> dict:
    wins = round(rate * n)
    return {"wins": wins, "losses": n - wins, "ties": 0, "n": n, "rate": rate, "low": rate - 0.1,
            "high": min(1.0, rate + 0.1)}


def loop_json(folder, taste: str | None, rm: tuple[float, int], vs_base: float, vs_sft: float) -> None:
    folder.mkdir()
    result = {"config": {} if taste is None else {"taste": taste}, "reward_model": {"heldout": win(*rm)},
              "evaluation": {"annotator_win_rate": {"ppo_vs_base": win(vs_base, 72), "ppo_vs_sft": win(vs_sft, 72),
                                                    "sft_vs_base": win(0.5, 72)}}}
    if taste is not None:
        result["taste"] = taste
    (folder / "loop.json").write_text(json.dumps(result))


def test_the_summary_puts_every_goal_of_every_taste_in_one_table(tmp_path, capsys):
    from bench.taste_summary import GOALS, main, summarise, table

    loop_json(tmp_path / "loop-terse", "terse", (0.9, 80), vs_base=0.97, vs_sft=0.6)
    loop_json(tmp_path / "loop-reasons", "reasons", (0.9, 40), vs_base=0.7, vs_sft=0.8)  # too few held-out pairs
    loop_json(tmp_path / "loop-old", None, (0.5, 100), vs_base=0.8, vs_sft=0.7)  # from before --taste
    rows = summarise([str(tmp_path / "loop-terse"), str(tmp_path / "loop-reasons" / "loop.json"),
                      str(tmp_path / "loop-old")])
    reached = {(r["run"], r["goal"]): r["reached"] for r in rows}
    assert len(rows) == 3 * len(GOALS) and {r["taste"] for r in rows} == {"terse", "reasons", "form"}
    assert reached[("loop-terse", "rm_heldout_accuracy")] and not reached[("loop-reasons", "rm_heldout_accuracy")]
    assert reached[("loop-terse", "final_vs_base")] and not reached[("loop-terse", "rl_vs_start")]
    assert not reached[("loop-reasons", "final_vs_base")] and reached[("loop-reasons", "rl_vs_start")]
    sure = {(r["run"], r["goal"]) for r in rows if r["sure"]}
    assert sure == {("loop-terse", "final_vs_base"), ("loop-reasons", "rl_vs_start")}  # whole interval above
    lines = table(rows).splitlines()
    assert len(lines) == 2 + 3 and lines[2].startswith("| terse | loop-terse |") and "2 of 3" in lines[2]
    assert "too few (< 60)" in lines[3] and "[80.0%, 100.0%]" in lines[2]
    main([str(tmp_path / "loop-terse"), str(tmp_path / "loop-old")])
    assert capsys.readouterr().out.count("\n") == 4
    with pytest.raises(SystemExit, match="--out folder"):
        summarise([str(tmp_path / "missing")])


def test_the_report_names_its_taste():
    from bench.loop_report import markdown

    share = {"hits": 1, "n": 2, "rate": 0.5, "low": 0.1, "high": 0.9}
    report = {"taste": "terse", "taste_rules": TASTES["terse"].summary, "goals": {}, "overoptimisation": [],
              "wall_s": {}, "votes": {"votes": 2, "left": 1, "right": 1, "tie": 0, "both_bad": 0, "own_requests": 0,
                                      "demonstrations": 0},
              "reward_model": {"train_pairs": 1, "eval_pairs": 1, "heldout": share, "ece": 0.1},
              "evaluation": {"prompts": 2, "rm_agrees_with_annotator": share,
                             "well_formed": dict.fromkeys(("base", "sft", "ppo"), share),
                             "annotator_win_rate": {"ppo_vs_base": win(0.5, 2)}, "rm_win_rate": {}}}
    text = markdown(report)
    assert text.startswith("# RLHF loop benchmark: taste `terse`") and TASTES["terse"].summary in text
