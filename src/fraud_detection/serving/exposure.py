"""Whether the service may listen where it is told to: beyond loopback, only with a key.

Bound to 127.0.0.1, ::1 or localhost only this machine reaches the API, and the local
profile serves it without a key. Bound to anything else (0.0.0.0 in a container, a LAN
address, a host name) anyone who reaches the interface could score, read ``/ready``'s
details and fill the prediction log, so the API key is required there whatever the
profile says, and ``fraud serve`` refuses to start without one unless told explicitly
(``--insecure-no-key``). Pure logic: no I/O, no logging; the CLI acts on the answer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fraud_detection.errors import FraudError

__all__ = [
    "INSECURE_FLAG",
    "KEY_VARIABLE",
    "ExposureDecision",
    "UnsafeBindError",
    "decide_exposure",
    "is_loopback",
]

KEY_VARIABLE = "FRAUD_API_KEY"
INSECURE_FLAG = "--insecure-no-key"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); false for the
    wildcards (0.0.0.0, ::), other addresses and any other host name."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public interface


class UnsafeBindError(FraudError):
    """Told to listen beyond loopback without an API key; the message names the fixes."""


@dataclass(frozen=True)
class ExposureDecision:
    """What :func:`decide_exposure` concluded: require the key, refuse, or warn."""

    require_key: bool
    refusal: str | None = None
    warning: str | None = None


def decide_exposure(host: str, *, key_set: bool, insecure_no_key: bool) -> ExposureDecision:
    """The rule for serving on ``host``.

    - loopback: nothing changes (the profile decides whether a key is needed);
    - beyond loopback with a key set: the key is required, even in the local profile;
    - beyond loopback without a key: a one-line refusal naming the fix, unless
      ``insecure_no_key``, which serves without a key and carries a warning.
    """
    if is_loopback(host):
        return ExposureDecision(require_key=False)
    if key_set:
        return ExposureDecision(require_key=True)
    if insecure_no_key:
        return ExposureDecision(
            require_key=False,
            warning=(
                f"serving on {host} WITHOUT an API key ({INSECURE_FLAG}): anyone who reaches "
                "this interface can call every endpoint"
            ),
        )
    return ExposureDecision(
        require_key=False,
        refusal=(
            f"refusing to serve on {host} without an API key: anyone who reaches it could "
            f"call the API; set {KEY_VARIABLE}=<key> (clients send it as X-API-Key), or bind "
            f"to 127.0.0.1, or pass {INSECURE_FLAG} to accept the risk"
        ),
    )
