"""bench/malloc_threshold.py: each arm's setting reaches the child process and changes how glibc gives memory back.

The probe stands in for the PPO run (`ours`) in a fresh interpreter, as the arm's child would be: a 16 MB tensor
freed (glibc's dynamic threshold rises to 16 MB), then 20 tensors of 4 MB made and all but the newest freed. With
the dynamic threshold the 4 MB blocks come from the heap and the newest, on top, pins the 76 MB freed under it;
with the threshold fixed at 128 kB each block is mapped on its own and unmapped when freed.
"""
import json
import os
import subprocess
import sys

import bench.malloc_threshold as malloc_threshold

PROBE = """
import json, resource
import torch

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

torch.zeros(4 * 2**20).add_(1)  # 16 MB, freed at once
before = rss_mb()
blocks = [torch.ones(2**20) for _ in range(20)]  # 20 x 4 MB
del blocks[:-1]
print(json.dumps({"retained_mb": rss_mb() - before}))
"""


def probe(reward_model, workdir) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], env=dict(os.environ), capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_arm_reaches_the_child_and_the_parent_environment_is_restored(monkeypatch, tmp_path):
    monkeypatch.setattr(malloc_threshold, "ours", probe)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(64 * 2**20))  # a user's own setting must not leak into an arm
    before = dict(os.environ)
    fixed = malloc_threshold.run_arm("128kB", tmp_path, tmp_path)["retained_mb"]
    dynamic = malloc_threshold.run_arm("dynamic", tmp_path, tmp_path)["retained_mb"]
    assert fixed < 10, f"only the newest 4 MB block should stay with a 128 kB threshold: {fixed:.1f} MB"
    assert dynamic > 40, f"glibc's dynamic threshold should keep the freed blocks in the heap: {dynamic:.1f} MB"
    assert dict(os.environ) == before
