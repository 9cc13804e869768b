"""Collect: two top-5 lists for a request, side by side, and the person's verdict on them.

    generate.py    both candidates of a pair in one batched `generate` (base and adapters routed per row)
    pair_queue.py  keeps the next pairs ready while the person reads, so a vote never waits for generation
    arena.py       the arena's logic (serve, vote, undo, rate, edit); apps/arena.py is a face on it
    chooser.py     which pair next: random, the reward model's most uncertain, or an unannounced swapped repeat;
                   which two policies (the stored pairing, switched live) and the round each pair records
    design.py      informative pairs by optimal design over candidates' features (measured in
                   bench/label_efficiency.py; not in the arena: it saved no votes there)
    library.py     the shipped prompt library (train / eval split) and seed demonstrations
"""
