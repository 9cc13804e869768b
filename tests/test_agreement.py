"""Agreement statistics against hand-worked values: self-agreement through the swap, Cohen's and Fleiss' kappa, the
`python -m core stats` command on a small database, and the Data page's Agreement section through AppTest."""
from __future__ import annotations

import math
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.judge.agreement import (
    INTRA_COLUMNS,
    KAPPA_COLUMNS,
    accuracy_ceiling,
    canonical_votes,
    cohen_kappa,
    fleiss_by_raters,
    fleiss_kappa,
    intra_agreement,
    pairwise_kappa,
    repeat_outcomes,
)
from core.records import Generation, Pair, Policy, Prompt, new_id
from core.runs import write_json
from core.store.database import Store
from core.store.lock import file_lock
from tests.helpers import REPO, run_cli

APP = str(REPO / "apps" / "dashboard.py")
START = datetime(2026, 1, 1)


# ---- frames as Store.votes() returns them ---------------------------------------------------------------------------
def vote(pair_id, choice, annotator, repeat_of=None, left="A", right="B", prompt="Top 5 rivers", retracted=False,
         review=None, minute=0) -> dict:
    return {"comparison_id": new_id(), "pair_id": pair_id, "prompt": prompt, "choice": choice, "annotator": annotator,
            "created_at": START + timedelta(minutes=minute), "left_text": left, "right_text": right,
            "retracted": retracted, "review": review, "repeat_of": repeat_of}


def frame(*votes: dict) -> pd.DataFrame:
    return pd.DataFrame(list(votes))


# ---- intra-annotator ------------------------------------------------------------------------------------------------
def test_self_agreement_maps_the_repeat_back_through_the_swap():
    votes = frame(
        vote("o1", "left", "alice"), vote("r1", "right", "alice", "o1", "B", "A"),  # right on the swap = left: agrees
        vote("o2", "tie", "alice"), vote("r2", "tie", "alice", "o2"),  # tie stays tie: agrees, not decided
        vote("o3", "left", "alice"), vote("r3", "left", "alice", "o3"),  # left on the swap = right: disagrees
        vote("o4", "right", "alice"), vote("r4", "right", "alice", "o4", retracted=True),  # undone: ignored
        vote("o5", "both_bad", "alice"), vote("r5", "left", "alice", "o5"),  # both_bad then right: disagrees
        vote("o7", "left", "alice"), vote("r7", "right", "alice", "o7", review="noise"),  # flagged noise: ignored
        vote("r1b", "left", "bob", "o1"),  # bob never voted on o1: his repeat has no original of his
        vote("o6", "right", "bob"), vote("r6", "left", "bob", "o6"),  # left on the swap = right: agrees
    )
    outcomes = repeat_outcomes(votes).set_index("pair_id")
    assert set(outcomes.index) == {"r1", "r2", "r3", "r5", "r6"}
    assert outcomes.repeat_choice.to_dict() == {"r1": "left", "r2": "tie", "r3": "right", "r5": "right", "r6": "right"}
    table = intra_agreement(votes).set_index("annotator")
    assert list(table.reset_index().columns) == INTRA_COLUMNS
    # alice: r1, r2 agree, r3, r5 do not: 2/4; decided both times: r1 (agrees) and r3 (does not): 1/2
    assert table.loc["alice", ["repeats", "agreed", "decided", "decided_agreed"]].tolist() == [4, 2, 2, 1]
    assert table.loc["bob", ["repeats", "agreed", "decided", "decided_agreed"]].tolist() == [1, 1, 1, 1]
    everyone = table.loc["(all)"]
    assert (everyone.repeats, everyone.agreed, everyone.rate) == (5, 3, 0.6)
    # Wilson 3/5: centre (0.6 + 1.96²/10) / (1 + 1.96²/5) = 0.5566, half 1.96·√(0.048 + 0.0384) / 1.7683 = 0.3258
    assert (everyone.low, everyone.high) == (pytest.approx(0.2307, abs=1e-4), pytest.approx(0.8824, abs=1e-4))
    assert everyone.decided_rate == pytest.approx(2 / 3)


def test_no_repeats_still_gives_the_pooled_row():
    table = intra_agreement(frame(vote("o1", "left", "alice")))
    assert table.annotator.tolist() == ["(all)"] and table.repeats.iloc[0] == 0 and table.rate.iloc[0] is None


def test_accuracy_ceiling():
    # equal noise on every pair: a = p² + (1-p)² = 0.8 gives p = (1 + √0.6) / 2 = 0.8873, the best accuracy
    assert accuracy_ceiling(0.8) == pytest.approx((1 + math.sqrt(0.6)) / 2)
    assert (accuracy_ceiling(1.0), accuracy_ceiling(0.5), accuracy_ceiling(0.3)) == (1.0, 0.5, 0.5)


# ---- inter-annotator ------------------------------------------------------------------------------------------------
# Two raters on ten items:  A = L L L L R R R T T B,  B = L L L R R R L T B B
# p_o = 7/10 (items 1-3, 5-6, 8, 10 agree); marginals A: L4 R3 T2 B1, B: L4 R3 T1 B2
# p_e = (4·4 + 3·3 + 2·1 + 1·2) / 100 = 0.29;  κ = (0.70 − 0.29) / (1 − 0.29) = 0.41 / 0.71 = 0.577465
RATER_A = ["left"] * 4 + ["right"] * 3 + ["tie"] * 2 + ["both_bad"]
RATER_B = ["left"] * 3 + ["right"] * 3 + ["left", "tie", "both_bad", "both_bad"]
HAND_KAPPA = 0.41 / 0.71


def test_cohen_kappa_on_a_hand_worked_table():
    assert cohen_kappa(RATER_A, RATER_B) == pytest.approx(HAND_KAPPA)
    assert cohen_kappa(RATER_A, RATER_A) == 1.0
    assert math.isnan(cohen_kappa(["tie"] * 3, ["tie"] * 3))  # chance agreement is 1: undefined
    with pytest.raises(ValueError, match="labels must be among"):
        cohen_kappa(["a"], ["left"])


def test_votes_are_oriented_to_one_order_of_the_texts():
    votes = frame(vote("p1", "left", "alice", left="A", right="B"),  # alice prefers A
                  vote("p2", "right", "bob", left="B", right="A"),  # bob too, seen the other way round
                  vote("p3", "left", "bob", left="B", right="A", minute=5),  # bob's later vote on it: not counted
                  vote("p4", "tie", "carol", left="A", right="B", prompt="Top 5 lakes"))  # another request
    canonical = canonical_votes(votes)
    assert canonical.choice.tolist() == ["left", "left", "tie"]
    assert canonical.item.nunique() == 2
    assert pairwise_kappa(votes)[["annotator_1", "annotator_2", "shared", "agreed"]].values.tolist() == \
        [["alice", "bob", 1, 1]]


def test_pairwise_kappa_through_shown_orientations():
    rows = []
    for n, (a, b) in enumerate(zip(RATER_A, RATER_B)):
        first, second = f"list {n} x", f"list {n} y"
        rows.append(vote(f"a{n}", a, "alice", left=first, right=second, prompt=f"request {n}"))
        # bob sees odd items the other way round, so his left/right is swapped on those
        shown = (second, first, {"left": "right", "right": "left"}.get(b, b)) if n % 2 else (first, second, b)
        rows.append(vote(f"b{n}", shown[2], "bob", left=shown[0], right=shown[1], prompt=f"request {n}"))
    rows.append(vote("c0", "left", "carol", left="list 0 x", right="list 0 y", prompt="request 0"))
    table = pairwise_kappa(frame(*rows))
    assert list(table.columns) == KAPPA_COLUMNS
    alice_bob = table.set_index(["annotator_1", "annotator_2"]).loc[("alice", "bob")]
    assert (alice_bob.shared, alice_bob.agreed, alice_bob.raw_agreement) == (10, 7, 0.7)
    assert alice_bob.kappa == pytest.approx(HAND_KAPPA)
    assert table.shared.tolist() == [10, 1, 1]  # alice-carol and bob-carol share item 0 only


def test_fleiss_kappa_on_fleiss_1971s_example():
    # Fleiss (1971), as on Wikipedia's "Fleiss' kappa": 10 subjects, 14 raters, 5 categories; P̄ = 0.378,
    # P̄_e = 0.213, κ = 0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(counts) == pytest.approx(0.20993, abs=1e-5)
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa([[2, 0], [1, 2]])


def test_fleiss_kappa_per_number_of_raters():
    # three raters on items 1-3: LLL, LRT, RRR -> P_i = 1, 0, 1, P̄ = 2/3; shares L 4/9, R 4/9, T 1/9,
    # P̄_e = 33/81; κ = (54/81 − 33/81) / (48/81) = 21/48 = 0.4375
    # two raters on items 4-5: LL, RT -> P_i = 1, 0, P̄ = 1/2; shares L 1/2, R 1/4, T 1/4, P̄_e = 0.375; κ = 0.2
    # one rater on item 6: not in any group
    items = {1: ["left"] * 3, 2: ["left", "right", "tie"], 3: ["right"] * 3, 4: ["left"] * 2, 5: ["right", "tie"],
             6: ["both_bad"]}
    votes = frame(*(vote(f"{item}-{who}", choice, who, prompt=f"request {item}")
                    for item, choices in items.items() for who, choice in zip(["alice", "bob", "carol"], choices)))
    table = fleiss_by_raters(votes)
    assert table[["raters", "items"]].values.tolist() == [[2, 2], [3, 3]]
    assert table.kappa.tolist() == [pytest.approx(0.2), pytest.approx(21 / 48)]


# ---- a real database: the CLI and the Data page ---------------------------------------------------------------------
def shown_pair(request: str, left: str, right: str) -> Pair:
    prompt = Prompt(request)
    return Pair(prompt, *(Generation(prompt, text, Policy("base"), True, 5) for text in (left, right)))


def swapped_repeat(original: Pair) -> Pair:
    """The arena's self-consistency repeat: the same two stored generations, sides swapped."""
    return Pair(original.prompt, original.right, original.left, chosen_by="repeat", repeat_of=original.pair_id)


def seed_store(path: Path, second_annotator: str | None = "bob") -> Store:
    """alice votes on two pairs and on each one's swapped repeat: the first she repeats consistently (left, then
    right on the swap), the second not (right, then right); `second_annotator` votes on the same two contents, shown
    swapped, agreeing with alice's first votes (right = x on rivers, left = y on lakes)."""
    store = Store(path)
    for request, first, again, theirs_choice in (("Top 5 rivers", "left", "right", "right"),
                                                 ("Top 5 lakes", "right", "right", "left")):
        original = shown_pair(request, f"{request}: list x", f"{request}: list y")
        repeat = swapped_repeat(original)
        for pair, choice in ((original, first), (repeat, again)):
            store.record_pair(pair)
            store.record_vote(pair.pair_id, choice, "alice")
        if second_annotator:
            theirs = shown_pair(request, original.right.text, original.left.text)  # shown swapped, agreeing with
            store.record_pair(theirs)                                              # alice's first votes
            store.record_vote(theirs.pair_id, theirs_choice, second_annotator)
    return store


def test_stats_prints_counts_agreement_and_kappas(tmp_path):
    db = tmp_path / "votes.duckdb"
    seed_store(db)
    out = run_cli("stats", "--db", db, timeout=120).stdout
    assert "6 votes" in out
    assert "  alice: all choices 50.0% [" in out and "(1/2); decided both times 50.0% [" in out
    assert "top out between 50.0% and 50.0%" in out  # (1 + √(2·0.5 − 1)) / 2 = 0.5
    # bob agrees with alice's first votes on both items (her repeats are not counted between annotators):
    # p_o = 1, p_e = ½·½ + ½·½ = ½, κ = 1
    kappa = next(line for line in out.splitlines() if line.split()[:2] == ["alice", "bob"])
    assert kappa.split()[2:] == ["2", "2", "1.000", "1.000"]
    assert "Fleiss' kappa" in out


def test_stats_answers_bad_input_in_one_line_and_needs_no_torch(tmp_path):
    missing = run_cli("stats", "--db", tmp_path / "nowhere.duckdb", check=False)
    assert (missing.returncode, missing.stderr.count("\n")) == (2, 1) and "no such database" in missing.stderr
    assert not (tmp_path / "nowhere.duckdb").exists()  # a read-only look creates nothing
    db = tmp_path / "votes.duckdb"
    seed_store(db, second_annotator=None)
    with file_lock(db, write=True, deadline=time.monotonic() + 5):  # another process mid-write
        busy = run_cli("stats", "--db", db, "--wait", "0.5", check=False)
    assert (busy.returncode, busy.stderr.count("\n")) == (2, 1) and "stayed locked" in busy.stderr
    negative = run_cli("stats", "--db", db, "--wait", "-1", check=False)
    assert negative.returncode == 2 and "--wait: -1 seconds: pass 0 or more" in negative.stderr
    probe = "import sys; from core.cli import main; main(['stats', '--db', sys.argv[1]]); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe, str(db)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.strip().endswith("False"), done.stderr


@pytest.fixture
def data_page(tmp_path, monkeypatch):
    """The dashboard on a fresh database and runs folder (as tests/test_dashboard_app.py's `dashboard`)."""
    monkeypatch.setenv("RLHF_DB", str(tmp_path / "db.duckdb"))
    monkeypatch.setenv("RLHF_RUNS_DIR", str(tmp_path / "runs"))
    (tmp_path / "runs").mkdir()

    def open_page() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=120).run()
        assert not at.exception, at.exception
        return at
    return tmp_path, open_page


def _frames(at: AppTest, columns: list[str]) -> list[pd.DataFrame]:
    return [f.value for f in at.dataframe if list(f.value.columns) == columns]


def test_data_page_shows_self_agreement_beside_the_reward_models_accuracy(data_page):
    folder, open_page = data_page
    seed_store(folder / "db.duckdb", second_annotator="<b>mallory</b> ![x](http://127.0.0.1:9/t.png)")
    run = folder / "runs" / "reward-20260101-000001"
    run.mkdir()
    write_json(run / "config.json", {"stage": "reward"})
    write_json(run / "status.json", {"state": "finished", "step": 2, "total": 2})
    write_json(run / "calibration.json", {"pairs": 20, "correct": 15, "accuracy": 0.75})
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["self-agreement on repeats"], metrics["self-agreement, decided both times"],
            metrics["reward model held-out accuracy"]) == ("50%", "50%", "75%")
    intra, = _frames(at, INTRA_COLUMNS)
    assert intra.set_index("annotator").loc["alice", ["repeats", "agreed"]].tolist() == [2, 1]
    kappa, = _frames(at, KAPPA_COLUMNS)
    assert kappa[["shared", "agreed"]].values.tolist() == [[2, 2]]
    # the annotator's name is typed text: in tables only, never rendered as Markdown
    assert not any("mallory" in m.value or "127.0.0.1" in m.value for m in [*at.markdown, *at.caption])


def test_data_page_with_one_annotator_shows_no_kappa_table(data_page):
    folder, open_page = data_page
    seed_store(folder / "db.duckdb", second_annotator=None)
    at = open_page()
    assert {m.label: m.value for m in at.metric}["reward model held-out accuracy"] == "-"
    assert len(_frames(at, INTRA_COLUMNS)) == 1 and not _frames(at, KAPPA_COLUMNS)
