"""``--device labgrid:PLACE``: a board from a labgrid farm, held for the duration of a ``with``.

labgrid (an optional extra: ``pip install tinyconv[farm]``) shares boards through a coordinator;
exporters publish each board's serial port over the network (ser2net, RFC 2217) and users
acquire a *place* (a named set of resources) before they use it. Here the place is acquired
through the coordinator at ``$LG_COORDINATOR`` (default 127.0.0.1:20408), its
NetworkSerialPort is looked up, and the place is released on the way out of the block,
whatever ends it (the run's end, an error, Ctrl-C). A place someone else holds is refused in
one line, as is a place without a serial port. docs/FARM.md describes the farm side.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import time
from contextlib import contextmanager
from typing import Iterator

from runtime.errors import TinyconvError

PREFIX = "labgrid:"
DEFAULT_COORDINATOR = "127.0.0.1:20408"
PORT_TIMEOUT = 10.0  # seconds for the exporter to start ser2net once the place is ours


class FarmError(TinyconvError):
    """The farm cannot give us the place (busy, unknown, unreachable, no serial port)."""


def is_place(device: str) -> bool:
    return device.startswith(PREFIX)


def _client():
    try:
        from labgrid.remote import client
    except ImportError:
        raise FarmError("--device labgrid:PLACE needs labgrid: pip install 'tinyconv[farm]'") \
            from None
    return client


def _quiet(session, coroutine):
    """Run one of labgrid's client coroutines without its progress lines on our stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        return session.loop.run_until_complete(coroutine)


def _serial_url(session, place) -> str | None:
    """The acquired place's serial port as a pyserial URL, once its exporter serves it."""
    for (_, cls), resource in session.get_target_resources(place).items():
        if cls != "NetworkSerialPort":
            continue
        params = resource.params
        if not resource.avail or params.get("port") is None:
            return None
        host, port = params["host"], params["port"]
        if params.get("protocol", "rfc2217") == "rfc2217":
            # modem control lines mean nothing on a virtual port (labgrid's driver does this too)
            return f"rfc2217://{host}:{port}?ign_set_control"
        return f"socket://{host}:{port}"
    raise FarmError(f"labgrid place {place.name} has no serial port (NetworkSerialPort): "
                    "tinyconv talks to a board over one")


_sessions: dict[str, list] = {}  # coordinator address -> [session, places held through it]


@contextmanager
def _session(address: str, name: str):
    """One client session per coordinator, shared by every place held at once: the
    coordinator knows a client by host and user name and takes one session for each."""
    client = _client()
    if address not in _sessions:
        args = argparse.Namespace(place=name, allow_unmatched=False, kick=False)
        try:
            # labgrid keeps one event loop per thread (grpc binds to it)
            _sessions[address] = [client.start_session(address, extra={"args": args}), 0]
        except Exception as exc:  # grpc's errors have no common base worth naming
            raise FarmError(f"cannot reach the labgrid coordinator at {address} "
                            f"(LG_COORDINATOR): {exc}") from None
    entry = _sessions[address]
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _sessions[address]
            with contextlib.suppress(Exception):
                entry[0].loop.run_until_complete(entry[0].stop())
                entry[0].loop.run_until_complete(entry[0].close())


@contextmanager
def acquired_place(device: str) -> Iterator[str]:
    """Acquire the place ``labgrid:NAME`` names; yield its serial port URL; release it."""
    name = device[len(PREFIX):]
    if not name:
        raise FarmError("--device labgrid:PLACE needs a place name")
    client = _client()
    address = os.environ.get("LG_COORDINATOR", DEFAULT_COORDINATOR)
    with _session(address, name) as session:
        session.args.place = name
        try:
            _quiet(session, session.acquire())
        except client.Error as exc:
            raise FarmError(f"labgrid place {name}: {exc}") from None
        try:
            place = session.get_place(name)
            deadline = time.monotonic() + PORT_TIMEOUT
            while (url := _serial_url(session, place)) is None:
                if time.monotonic() > deadline:
                    raise FarmError(f"labgrid place {name}: its serial port was not served "
                                    f"within {PORT_TIMEOUT:g} s (is its exporter running?)")
                session.loop.run_until_complete(asyncio.sleep(0.05))
                place = session.get_place(name)
            yield url
        finally:
            session.args.place = name
            _quiet(session, session.release())
