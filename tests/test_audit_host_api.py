"""The host's Python API refuses a wait, a count or a baud rate it cannot honour, as the
command line does: `Link(url, timeout=nan)` was accepted, and a NaN deadline compares False
with every clock reading, so a dead device was waited for forever (failed before the fix)."""
from __future__ import annotations

import socket

import numpy as np
import pytest

import _host_device as hd
from firmware_host.link import Link
from firmware_host.verify import verify
from runtime.errors import TinyconvError
from tinyconv.cli import main

NAN, INF = float("nan"), float("inf")
BAD = [("timeout", NAN), ("timeout", INF), ("timeout", 0), ("timeout", -1.0),
       ("timeout", "2"), ("timeout", True),
       ("silence", NAN), ("silence", INF), ("silence", 0.0), ("silence", -5),
       ("connect_timeout", NAN), ("connect_timeout", INF), ("connect_timeout", -1),
       ("retries", -1), ("retries", 1.5), ("retries", NAN),
       ("window", 0), ("window", 2.5), ("window", np.int64(-3)),
       ("baud", 0), ("baud", -9600), ("baud", NAN), ("baud", 9600.5), ("baud", None)]


@pytest.fixture
def listener():
    """A real TCP port that accepts: a Link built on it would open, and then wait."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    yield server
    server.close()


def connected(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
        return True
    except BlockingIOError:
        return False


@pytest.mark.parametrize("name,value", BAD, ids=[f"{n}={v!r}" for n, v in BAD])
def test_link_refuses_a_bad_knob_before_opening(listener, name, value):
    url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
    with pytest.raises(TinyconvError) as caught:
        Link(url, **{name: value}).close()
    message = str(caught.value)
    assert message.startswith(f"{name} must be ") and repr(value) in message, message
    assert "\n" not in message and not connected(listener)


def test_link_takes_good_knobs(listener):
    url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
    with Link(url, timeout=0.25, silence=1, retries=0, window=1, baud=9600,
              connect_timeout=0.5) as link:
        assert (link.timeout, link.silence, link.retries, link.window) == (0.25, 1, 0, 1)
    with Link(url, timeout=np.float32(0.5), retries=np.int64(2)) as link:
        assert link.silence == 1.5  # the default: (retries + 1) x timeout
    assert connected(listener)


@pytest.mark.parametrize("name,value", [("timeout", NAN), ("silence", INF), ("baud", 0),
                                        ("retries", -2), ("window", 0), ("limit", NAN),
                                        ("limit", 2.5)])
def test_verify_api_refuses_first(tmp_path, name, value):
    """verify() names the knob before it loads the model or starts a device (the export
    directory here does not even exist: that error would come later)."""
    with pytest.raises(TinyconvError, match=rf"^(--)?{name} must be .*{value!r}"):
        verify(tmp_path / "no-export", hd.images(2), progress=False, **{name: value})


@pytest.mark.parametrize("option,value", [("--baud", "0"), ("--baud", "-115200"),
                                          ("--timeout", "nan"), ("--window", "0")])
def test_verify_cli_names_the_option_and_value(tmp_path, capsys, option, value):
    np.savez(tmp_path / "data.npz", x=hd.images(2))
    assert main(["verify", str(tmp_path / "no-export"), "--input", str(tmp_path / "data.npz"),
                 option, value, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option} must be " in err and value in err, err
