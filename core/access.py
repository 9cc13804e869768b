"""Who may use the apps: `RLHF_PASSWORD` opens everything, `RLHF_VIEWER_PASSWORD` a dashboard that can look but
not start, stop or relabel anything. With neither set, the apps are open to whoever can reach them, which is why
both bind 127.0.0.1 unless told otherwise, and why binding another address without a password gets a warning.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # everything
    VIEWER = "viewer"  # look only
    NONE = "none"  # wrong password


def passwords_configured() -> bool:
    return bool(os.environ.get("RLHF_PASSWORD") or os.environ.get("RLHF_VIEWER_PASSWORD"))


def role_for(password: str) -> Role:
    """The role a typed password opens (compared in constant time)."""
    typed = password.encode()
    for variable, role in (("RLHF_PASSWORD", Role.ADMIN), ("RLHF_VIEWER_PASSWORD", Role.VIEWER)):
        expected = os.environ.get(variable, "")
        if expected and hmac.compare_digest(typed, expected.encode()):
            return role
    return Role.NONE


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, app: str) -> str | None:
    """A one-line warning when `app` is about to be reachable from other machines with no password, else None."""
    if is_loopback(host) or os.environ.get("RLHF_PASSWORD"):
        return None
    return (f"warning: the {app} binds {host} with no RLHF_PASSWORD set: anyone who can reach this machine can use "
            "it. Set RLHF_PASSWORD (and RLHF_VIEWER_PASSWORD for a look-only dashboard), or bind 127.0.0.1.")


def arena_login():
    """Gradio's `auth` for the arena: with RLHF_PASSWORD set, any user name with that password; else None (open)."""
    if not os.environ.get("RLHF_PASSWORD"):
        return None
    return lambda username, password: role_for(password) is Role.ADMIN
