"""The scripted annotator's taste (bench/annotator.py) on hand-written lists."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.annotator import StarScale, Taste, judge, repair, utility

REQUEST = "Top 5 ideas for a Thanksgiving meal"
GOOD = ("1. Roast turkey - the classic centrepiece for a Thanksgiving table.\n2. Mashed potatoes - creamy and easy.\n"
        "3. Cornbread stuffing - savoury and crisp on top.\n4. Green bean casserole - a bright side dish.\n"
        "5. Pumpkin pie - the traditional sweet finish.")
PREAMBLE = "Sure! Here are some ideas:\n" + GOOD
THREE = "1. Roast turkey - classic.\n2. Mashed potatoes - creamy.\n3. Pumpkin pie - sweet."
PROSE = "For Thanksgiving you could roast a turkey, mash some potatoes and bake a pumpkin pie."
COPIES = "\n".join(f"{n}. Roast turkey - the classic." for n in range(1, 6))
SAME_OPENER = "\n".join(f"{n}. Turkey {w} - good." for n, w in enumerate(["roast", "pie", "soup", "salad", "wings"], 1))
ONE_WORD = "1. Turkey\n2. Potatoes\n3. Stuffing\n4. Beans\n5. Pie"
OFF_TOPIC = ("1. Chess - deep strategy.\n2. Go - elegant rules.\n3. Catan - trading fun.\n4. Hive - no board needed.\n"
             "5. Azul - pretty tiles.")
RAMBLING = "\n".join(f"{n}. Roast turkey " + "with a very long story about family dinners " * 5 for n in range(1, 6))


def test_a_well_formed_on_topic_list_beats_every_flawed_one():
    best = utility(REQUEST, GOOD)
    for flawed in (PREAMBLE, THREE, PROSE, COPIES, SAME_OPENER, ONE_WORD, OFF_TOPIC, RAMBLING):
        assert utility(REQUEST, flawed) < best, flawed


def test_no_single_trick_scores_like_a_good_list():
    # numbering alone (copies, one-word items, the same opener, off topic) stays well below a good list
    for trick in (COPIES, ONE_WORD, SAME_OPENER, OFF_TOPIC):
        assert utility(REQUEST, GOOD) - utility(REQUEST, trick) >= 1.0, trick


def test_form_outweighs_polish():
    # a terse but well-formed list beats a polished one with a preamble
    assert utility(REQUEST, ONE_WORD) > utility(REQUEST, PREAMBLE)
    assert utility(REQUEST, PROSE) < 0 and utility(REQUEST, THREE) < 0


def test_votes_follow_the_taste_with_some_noise():
    rng = random.Random(0)
    votes = Counter(judge(REQUEST, GOOD, PREAMBLE, rng)[0] for _ in range(400))
    assert votes["left"] / 400 > 0.9 and votes["right"] > 0  # mostly right, never perfectly so (slips)
    swapped = Counter(judge(REQUEST, PREAMBLE, GOOD, random.Random(1))[0] for _ in range(400))
    assert swapped["right"] / 400 > 0.9


def test_ties_both_bad_and_strength():
    quiet = Taste(slip=0.0)
    assert judge(REQUEST, GOOD, GOOD, random.Random(0), quiet) == ("tie", None)
    assert judge(REQUEST, PROSE, PROSE, random.Random(0), quiet) == ("both_bad", None)
    choice, strength = judge(REQUEST, GOOD, PROSE, random.Random(0), quiet)
    assert choice == "left" and strength == 3


def test_repair_turns_a_flawed_list_into_a_well_formed_demonstration():
    from core.lists import parse_list

    fixed = repair(PREAMBLE + "\n\nEnjoy your meal!")
    assert fixed is not None and parse_list(fixed).well_formed and "Sure" not in fixed
    assert repair(THREE) is None  # too few items to make five


@pytest.mark.parametrize("text", ["", "   ", "1.", "\n\n\n"])
def test_degenerate_answers_do_not_crash_and_score_low(text):
    assert utility(REQUEST, text) < 0


def test_forced_choice_never_ties_and_prefers_the_shorter_of_equals():
    forced = Taste(forced_choice=True, slip=0.0)
    garbage_a, garbage_b = "zq xv " * 10, "zq xv " * 30  # equally broken, off topic: a free annotator says both bad
    assert judge(REQUEST, garbage_a, garbage_b, random.Random(0)) == ("both_bad", None)
    assert judge(REQUEST, garbage_a, garbage_b, random.Random(0), forced) == ("left", 1)
    assert judge(REQUEST, garbage_b, garbage_a, random.Random(0), forced) == ("right", 1)
    assert judge(REQUEST, GOOD, PROSE, random.Random(0), forced) == ("left", 3)  # a real gap still decides
    # identical lists: a side at random, both sides over many votes; slips never tie either
    sides = Counter(judge(REQUEST, GOOD, GOOD, random.Random(n), forced)[0] for n in range(200))
    assert set(sides) == {"left", "right"}
    slips = Counter(judge(REQUEST, GOOD, PROSE, random.Random(n), Taste(forced_choice=True, slip=1.0))[0]
                    for n in range(200))
    assert set(slips) == {"left", "right"}


def test_own_requests_are_custom_prompts_some_held_out():
    from bench.annotator import OWN_REQUESTS
    from core.collect.library import load_prompts
    from core.records import prompt_id_for
    from core.train.snapshot import split_for

    assert len(set(OWN_REQUESTS)) == len(OWN_REQUESTS) >= 50
    assert not set(OWN_REQUESTS) & {p.text for p in load_prompts()}  # never a library request, held-out or not
    held_out = sum(split_for(prompt_id_for(r), None, 0.5) == "eval" for r in OWN_REQUESTS)
    assert 0.25 * len(OWN_REQUESTS) < held_out < 0.75 * len(OWN_REQUESTS)


def test_stars_wait_for_a_sense_of_the_range_then_follow_quintiles_of_what_was_seen():
    scale = StarScale(Taste(slip=0.0), random.Random(0), warmup=10)
    for u in range(9):
        scale.see(float(u))
    assert scale.stars(5.0) is None  # nine lists seen: no stars yet
    scale.see(9.0)  # seen 0..9: cut-offs at sorted indices 2, 4, 6, 8: 2.0, 4.0, 6.0, 8.0
    assert [scale.stars(u) for u in (-1.0, 2.0, 2.5, 4.5, 6.5, 8.5, 99.0)] == [1, 1, 2, 3, 4, 5, 5]


def test_a_slip_moves_a_star_by_one_and_stays_on_the_scale():
    scale = StarScale(Taste(slip=1.0), random.Random(0), warmup=10)
    for u in range(10):
        scale.see(float(u))
    assert {scale.stars(5.0) for _ in range(50)} == {2, 4}  # 3 without the slip
    assert {scale.stars(99.0) for _ in range(50)} == {4, 5}  # 5 cannot go up
