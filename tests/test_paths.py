"""core/paths.py: the whole-or-nothing write every project file goes through."""
from __future__ import annotations

import pytest

from core.paths import write_whole


@pytest.mark.parametrize("stop", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_stops_halfway_keeps_the_old_file_and_leaves_no_temporary(tmp_path, stop):
    """Under every whole-or-nothing file of the project: run files, checkpoints, exports, the llama.cpp verdicts."""
    target = tmp_path / "status.json"
    write_whole(target, lambda tmp: tmp.write_text('{"state": "running"}'))

    def half_then_stop(tmp):
        tmp.write_text('{"state": "fini')
        raise stop

    with pytest.raises(type(stop)):
        write_whole(target, half_then_stop)
    assert target.read_text() == '{"state": "running"}' and [p.name for p in tmp_path.iterdir()] == ["status.json"]
