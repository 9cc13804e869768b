"""bench/reward_pooling.py: the list mask against hand-made ids and a tiny run (the probe's fit: test_reward_probe)."""
from __future__ import annotations

import torch

from bench.reward_pooling import list_mask, main

START, NEWLINE, PAD = 1, 9, 0


def test_the_list_mask_covers_the_tokens_after_the_last_assistant_header():
    # [pad] <start> system 9 <start> user 9 <start> assistant 9 | list tokens 5 6 7
    ids = torch.tensor([[PAD, START, 3, NEWLINE, START, 4, NEWLINE, START, 8, NEWLINE, 5, 6, 7],
                        [START, 3, NEWLINE, START, 4, NEWLINE, START, 8, NEWLINE, 5, NEWLINE, 6, PAD]])
    attention = (ids != PAD).long()
    attention[1, -1] = 0
    mask = list_mask(ids, attention, START, NEWLINE)
    assert mask[0].tolist() == [0] * 10 + [1, 1, 1]
    assert mask[1].tolist() == [0] * 9 + [1, 1, 1, 0]  # a newline inside the list stays in; padding does not


def test_a_tiny_run_reports_the_reference_probes_and_both_poolings(tiny_reward_run, tmp_path):
    rows = main(["--reference", str(tiny_reward_run), "--out", str(tmp_path), "--seeds", "0", "--lora", "last,mean"])
    names = [r["setting"] for r in rows]
    assert names[0].startswith("reference") and rows[0]["only_here"] == rows[0]["only_reference"] == 0
    assert {"frozen probe: last", "frozen probe: mean", "LoRA, last, seed 0", "LoRA, mean, seed 0"} <= set(names)
    assert all(r["pairs"] == rows[0]["pairs"] > 0 and 0 <= r["correct"] <= r["pairs"] for r in rows)
    assert (tmp_path / "reward_pooling.md").read_text().count("\n") == len(rows) + 2


def test_a_folder_that_is_not_a_reward_run_gets_one_line(tmp_path, capsys):
    assert main(["--reference", str(tmp_path), "--out", str(tmp_path / "out")]) == []
    assert "not a finished reward run" in capsys.readouterr().out


def test_an_unknown_pooling_gets_one_line(tiny_reward_run, tmp_path, capsys):
    assert main(["--reference", str(tiny_reward_run), "--out", str(tmp_path), "--lora", "max"]) == []
    assert "--lora takes last and/or mean" in capsys.readouterr().out
