"""The dashboard's server as `streamlit run` starts it: what address it binds with no flag."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, wait_for


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6, state 0A = LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_a_plain_streamlit_run_binds_this_machine_only(tmp_path):
    """`streamlit run apps/dashboard.py` with no address flag: the shipped .streamlit/config.toml binds 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RLHF_DB": str(tmp_path / "db.duckdb"), "RLHF_RUNS_DIR": str(tmp_path / "runs")}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "apps/dashboard.py", "--server.port",
                               str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", server)
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and no 0.0.0.0 or :: socket
    finally:
        server.terminate()
        server.wait(timeout=10)
