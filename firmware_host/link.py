"""A client for the device protocol over any pyserial URL (a /dev path, a pty path,
``socket://host:port``, ``rfc2217://...``).

``Link.infer_many`` keeps a bounded window of INFER requests in flight, so the link carries the
next image while the device computes the current one, and never more request bytes than the
device's INFO says it can buffer meanwhile (credit flow control: a frame sent into a full
receive ring would be lost, so retries are left for line noise). Nothing is trusted without its
CRC and a sequence number that is in flight; a lost, corrupted or refused request is resent under a fresh
sequence number a bounded number of times, then reported failed for that image. Every wait has
a deadline, so a dead device ends the run instead of hanging it; and a device that is connected
but has sent no valid frame for ``silence`` seconds while requests wait raises ``LinkError``
instead of failing every remaining image one timeout after another.
"""
from __future__ import annotations

import math
import numbers
import struct
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import serial

from firmware_host import wire
from runtime.errors import TinyconvError

try:
    import fcntl
    import termios
except ImportError:  # Windows: pyserial's in_waiting it is
    fcntl = termios = None


class LinkError(TinyconvError):
    """The device cannot be reached or stopped answering altogether."""


class DeviceBusy(LinkError):
    """Another process holds the device's port."""


@dataclass
class LinkStats:
    frames_sent: int = 0
    frames_received: int = 0
    retries: int = 0
    corrupt: int = 0          # replies with bad COBS/CRC/length, or oversized garbage
    stale: int = 0            # valid replies whose seq was no longer in flight
    timeouts: int = 0
    device_errors: int = 0    # ERROR replies
    bytes_sent: int = 0
    bytes_received: int = 0
    payload_bytes_sent: int = 0
    max_bytes_in_flight: int = 0  # encoded INFER bytes sent and not yet answered, at most
    longest_silence: float = 0.0  # seconds without a valid frame while requests waited

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class InferOutcome:
    """What became of one input: ``output`` is None when every attempt failed."""

    index: int
    output: np.ndarray | None = None
    ticks: int | None = None
    attempts: int = 0
    failures: list[str] = field(default_factory=list)  # why each failed attempt failed

    @property
    def ok(self) -> bool:
        return self.output is not None


def _waiting(port) -> int:
    """Bytes the port holds now. pyserial's ``socket://`` answers 0 or 1 (a select), which
    made the link read a reply byte by byte, one syscall pair and one pass through _receive
    each: FIONREAD counts them (QEMU's UART is such a socket)."""
    if type(port).__module__.endswith("protocol_socket") and fcntl is not None:
        try:
            return struct.unpack("I", fcntl.ioctl(port.fileno(), termios.FIONREAD,
                                                  b"\0\0\0\0"))[0]
        except OSError:
            pass
    return port.in_waiting


def _to_stderr(message: str) -> None:
    print(f"tinyconv: {message}", file=sys.stderr, flush=True)


@dataclass
class _Babble:
    """Bytes arriving that form no valid frame (a wrong baud rate, another program on the
    board, a console banner): the user hears of it after ``notice_after`` seconds, and the link
    gives up after ``limit`` seconds of it, instead of waiting out every retry in silence."""

    limit: float
    notice_after: float = 1.0
    since: float | None = None  # the first byte after the last valid frame
    last: float = 0.0
    count: int = 0
    told: bool = False

    def heard(self) -> None:
        self.since, self.count, self.told = None, 0, False

    def bytes(self, n: int, now: float) -> None:
        if n:
            if self.since is None or now - self.last > self.notice_after:  # a new stretch
                self.since, self.count = now, 0
            self.last, self.count = now, self.count + n

    def lasting(self, now: float) -> float:
        """How long the device has been streaming only junk, without a pause (0 when it is
        quiet: a banner followed by silence is not junk that goes on)."""
        if self.since is None or self.count < 64 or now - self.last > self.notice_after:
            return 0.0
        return now - self.since


def check_link_options(*, baud=115200, timeout=2.0, window=4, retries=3,
                       connect_timeout=0.0, silence=None, flag: str = "") -> None:
    """Refuse, in one line naming the knob and its value, what the link cannot honour. A NaN
    wait compares False with every clock reading and an infinite one never ends, so either
    would wait for a dead device forever. One check for the API and the command line
    (``flag="--"`` names the options as typed); a None timeout or silence is the default."""
    def bad(name, value, wanted):
        raise TinyconvError(f"{flag}{name} must be {wanted}, got {value!r}")

    for name, value, low in (("baud", baud, 1), ("window", window, 1), ("retries", retries, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            bad(name, value, f"an integer >= {low}")
    for name, value, positive in (("timeout", timeout, True), ("silence", silence, True),
                                  ("connect_timeout", connect_timeout, False)):
        if value is None and positive:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value) or value < 0 or (positive and value == 0):
            bad(name, value, f"{'>' if positive else '>='} 0 seconds (finite)")


class Link:
    def __init__(self, url: str, *, baud: int = 115200, timeout: float = 2.0, window: int = 4,
                 retries: int = 3, connect_timeout: float = 0.0, silence: float | None = None,
                 notice: Callable[[str], None] = _to_stderr):
        """``timeout``: how long the oldest request in flight may wait for its reply.
        ``retries``: resends per request after the first attempt.
        ``connect_timeout``: keep trying to open ``url`` this long (a device still starting).
        ``silence``: give up (LinkError) when the device sends no valid frame for this long
        while requests wait. The default, ``(retries + 1) * timeout``, is as long as one
        request's every attempt may take: a stall or reset shorter than that is retried, a
        device that stays silent longer ends the run instead of failing every image in turn.
        A device that sends only bytes that are not frames is named through ``notice`` (stderr)
        after a second and given up on after ``min(silence, 5)`` seconds (longer when the
        largest valid frame takes longer on the wire at ``baud``).
        A knob the link cannot honour (NaN, infinite, negative, not a number) is a
        TinyconvError naming it, before the port is opened."""
        check_link_options(baud=baud, timeout=timeout, window=window, retries=retries,
                           connect_timeout=connect_timeout, silence=silence)
        timeout = 2.0 if timeout is None else timeout
        if silence is None:
            silence = (retries + 1) * timeout
        self.url, self.timeout, self.window, self.retries = url, timeout, window, retries
        self.baud = baud
        self.silence = silence
        self.notice = notice
        self._babble = _Babble(limit=min(silence, 5.0))
        self.stats = LinkStats()
        self._seq = 0
        self._last_frame_bytes = 0
        self._info: wire.DeviceInfo | None = None
        # Replies before INFO (RESET, INFO, ERROR) fit in 4 KiB; INFO then says how big a
        # RESULT can be. Anything longer is garbage and is dropped, not buffered.
        self._splitter = wire.FrameSplitter(max_frame=4096)
        self._frames: deque[bytes] = deque()
        self._port = self._open(url, baud, connect_timeout)

    def _open(self, url: str, baud: int, connect_timeout: float):
        """Open ``url`` exclusively: a serial port is flock()ed before anything is written to
        it, so a second verify on the same device fails at once instead of both reading each
        other's replies (the lock goes with the process, however it ends)."""
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                # pyserial's RFC 2217 client has no write timeout (it refuses one)
                write_timeout = None if url.startswith("rfc2217://") else self.timeout
                return serial.serial_for_url(url, baudrate=baud, timeout=0.02,
                                             write_timeout=write_timeout, exclusive=True)
            except (serial.SerialException, OSError, ValueError) as exc:
                if "exclusively lock" in str(exc):
                    raise DeviceBusy(f"device busy: {url} is in use by another program "
                                     "(another tinyconv verify?)") from None
                if time.monotonic() >= deadline:
                    raise LinkError(f"cannot open device {url}: {exc}") from None
                time.sleep(0.05)

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            finally:
                self._port = None

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- bytes and frames ----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _write(self, data: bytes) -> None:
        """Every byte to the device goes through here: a port that fails (an unplugged USB
        CDC, a pty whose device exited) is a LinkError, not a traceback."""
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"writing to {self.url} failed: {exc}") from None
        self.stats.bytes_sent += len(data)

    def _send(self, type_: int, payload: bytes = b"") -> int:
        seq = self._next_seq()
        data = wire.encode_frame(wire.Frame(type_, seq, payload))
        self._write(data)
        self._last_frame_bytes = len(data)
        self.stats.frames_sent += 1
        self.stats.payload_bytes_sent += len(payload)
        return seq

    def _receive(self) -> wire.Frame | None:
        """The next valid frame, or None when none is complete after one read (which waits at
        most the port's short timeout), so callers get to check their deadlines even while a
        broken device streams bytes without delimiters. Corrupt frames are counted, skipped."""
        if not self._frames:
            try:
                data = self._port.read(max(wire.MIN_REPLY_BYTES - self._splitter.pending,
                                           _waiting(self._port), 1))
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"reading from {self.url} failed: {exc}") from None
            self.stats.bytes_received += len(data)
            self._babble.bytes(len(data), time.monotonic())
            before = self._splitter.oversized
            self._frames.extend(self._splitter.feed(data))
            self.stats.corrupt += self._splitter.oversized - before
            if not self._frames:
                return self._judge_babble()
        raw = self._frames.popleft()
        try:
            frame = wire.decode_frame(raw)
        except wire.FrameError:
            self.stats.corrupt += 1
            return self._judge_babble()
        self.stats.frames_received += 1
        self._babble.heard()
        return frame

    def _judge_babble(self) -> None:
        """Tell the user early, and give up in bounded time, when the device talks junk."""
        babble = self._babble
        lasting = babble.lasting(time.monotonic())
        if not lasting:  # the usual case: no junk now (nothing to say, nothing to format)
            return None
        # never less than three times the longest valid frame takes on the wire (10 bits/byte)
        limit = min(self.silence, max(babble.limit, 30 * self._splitter.max_frame / self.baud))
        what = (f"device {self.url} sends bytes that are not tinyconv frames ({babble.count:,} "
                f"bytes, no valid frame in {lasting:.1f} s)")
        if lasting >= limit:
            raise LinkError(f"{what}: is it running tinyconv firmware, at {self.baud} baud "
                            "(--baud)?")
        if lasting >= babble.notice_after and not babble.told:
            babble.told = True
            self.notice(f"{what}; waiting {limit - lasting:.0f} s more for a valid one")
        return None

    # -- single requests -----------------------------------------------------------------------

    def request(self, type_: int, payload: bytes = b"", expect: int | None = None) -> wire.Frame:
        """Send one request and return its reply, resending on loss or corruption; replies
        with other sequence numbers (left over from earlier traffic) are skipped. Gives up
        after ``retries + 1`` attempts or ``silence`` seconds without a valid frame."""
        failures = []
        quiet_since = time.monotonic()
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
            seq = self._send(type_, payload)
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                frame = self._receive()
                if frame is None:
                    continue
                quiet_since = self._heard(quiet_since)
                if frame.seq != seq:
                    self.stats.stale += 1
                    continue
                if frame.type == wire.Msg.ERROR:
                    self.stats.device_errors += 1
                    code, text = wire.parse_error(frame.payload)
                    failures.append(f"device error {code}: {text}")
                    break
                if expect is not None and frame.type != expect:
                    failures.append(f"unexpected reply type 0x{frame.type:02x}")
                    break
                return frame
            else:
                self.stats.timeouts += 1
                failures.append(f"no reply within {self.timeout:g} s")
                if time.monotonic() - quiet_since >= self.silence:
                    break
        quiet = time.monotonic() - quiet_since
        raise LinkError(f"device {self.url} did not answer {wire.Msg(type_).name} "
                        f"({'; '.join(failures)}; no valid frame for the last {quiet:.1f} s)")

    def _heard(self, quiet_since: float) -> float:
        """A valid frame arrived: it ends the quiet stretch that began at ``quiet_since``."""
        now = time.monotonic()
        self.stats.longest_silence = max(self.stats.longest_silence, round(now - quiet_since, 3))
        return now

    def sync(self) -> tuple[int, int, int]:
        """Flush any half frame on both sides and RESET the device; returns its counters."""
        self._write(b"\0")
        frame = self.request(wire.Msg.RESET, expect=wire.Msg.RESET_REPLY)
        return wire.parse_reset(frame.payload)

    def info(self) -> wire.DeviceInfo:
        if self._info is None:
            frame = self.request(wire.Msg.INFO, expect=wire.Msg.INFO_REPLY)
            try:
                self._info = wire.parse_info(frame.payload)
            except wire.FrameError as exc:
                raise LinkError(f"device {self.url} sent a malformed INFO reply: {exc}") from None
            result_frame = wire.FRAME_OVERHEAD + 4 + self._info.output_size
            self._splitter.max_frame = max(4096, result_frame + result_frame // 254 + 1)
            if self._info.protocol_version != wire.PROTOCOL_VERSION:
                raise LinkError(f"device {self.url} speaks protocol version "
                                f"{self._info.protocol_version}, this tinyconv speaks "
                                f"{wire.PROTOCOL_VERSION}")
        return self._info

    # -- streaming inference -------------------------------------------------------------------

    def infer(self, x) -> InferOutcome:
        return next(self.infer_many([x]))

    def infer_many(self, inputs: Iterable) -> Iterator[InferOutcome]:
        """Yield one InferOutcome per input, in input order. Each input is the int8 tensor (any
        shape with the device's input size). At most ``window`` requests are in flight and at
        most ``window`` outcomes are held back for ordering, so memory is bounded. A slot is
        refilled as soon as it frees: whenever the link waits for the device, the window is
        full (unless the inputs have run out or an earlier image still holds the order up).

        Raises LinkError when the device sends no valid frame for ``silence`` seconds while
        requests wait, or the port fails; a shorter stall or a device reset is retried like any
        lost frame. The error's ``unfinished`` lists the InferOutcome of every input taken but
        not yet yielded (in flight, waiting for a resend, or answered but held for ordering),
        so a caller can account for every frame sent."""
        taken: dict[int, InferOutcome] = {}  # index -> outcome, until it is yielded
        try:
            yield from self._infer_stream(inputs, taken)
        except LinkError as exc:
            exc.unfinished = [taken[i] for i in sorted(taken)]
            raise

    def _infer_stream(self, inputs: Iterable, taken: dict) -> Iterator[InferOutcome]:
        info = self.info()
        source = iter(inputs)
        payloads: dict[int, bytes] = {}
        outcomes: dict[int, InferOutcome] = {}
        done: dict[int, InferOutcome] = {}
        in_flight: OrderedDict[int, int] = OrderedDict()  # seq -> index, in send order
        frame_bytes: dict[int, int] = {}  # seq -> its encoded size, while in flight
        # one request is always allowed, however small the device's buffer
        request_bound = wire.max_frame_bytes(info.input_size)
        resend: deque[int] = deque()
        next_index = 0
        next_yield = 0
        exhausted = False
        head_since = quiet_since = time.monotonic()

        def finish(index: int, failure: str | None, retry: bool) -> None:
            outcome = outcomes[index]
            if failure is not None:
                outcome.failures.append(failure)
                if retry and outcome.attempts <= self.retries:
                    resend.append(index)
                    return
            del payloads[index]
            done[index] = outcomes.pop(index)

        def retire(seq: int, failure: str | None, retry: bool = True) -> None:
            nonlocal head_since
            index = in_flight.pop(seq)
            del frame_bytes[seq]
            head_since = time.monotonic()
            finish(index, failure, retry)

        while True:
            # Hand back what is ready first, then refill: the freed slots are filled before the
            # link waits for the device again.
            while next_yield in done:
                del taken[next_yield]
                yield done.pop(next_yield)
                next_yield += 1
            while len(in_flight) < self.window:
                if in_flight and sum(frame_bytes.values()) + request_bound > info.rx_capacity:
                    break  # no credit: the device could not buffer another request
                if resend:
                    index = resend.popleft()
                elif not exhausted and next_index < next_yield + self.window:
                    try:
                        x = next(source)
                    except StopIteration:
                        exhausted = True
                        continue
                    data = np.ascontiguousarray(x, dtype=np.int8).tobytes()
                    if len(data) != info.input_size:
                        raise TinyconvError(f"input {next_index} has {len(data)} values, the "
                                            f"device's model takes {info.input_size}")
                    index = next_index
                    next_index += 1
                    payloads[index] = data
                    outcomes[index] = taken[index] = InferOutcome(index)
                else:
                    break
                if not in_flight:
                    head_since = quiet_since = time.monotonic()
                seq = self._send(wire.Msg.INFER, payloads[index])
                in_flight[seq], frame_bytes[seq] = index, self._last_frame_bytes
                self.stats.max_bytes_in_flight = max(self.stats.max_bytes_in_flight,
                                                     sum(frame_bytes.values()))
                outcomes[index].attempts += 1  # counted once the frame is out, as are retries
                if outcomes[index].attempts > 1:
                    self.stats.retries += 1
            if not in_flight:
                if exhausted and not resend and not done:
                    return
                continue
            frame = self._receive()
            if frame is not None:
                quiet_since = self._heard(quiet_since)
                if frame.seq not in in_flight:
                    self.stats.stale += 1
                    continue
                # The device answers in order: requests sent before this one were lost.
                for seq in list(in_flight):
                    if seq == frame.seq:
                        break
                    retire(seq, "request or its reply lost")
                self._complete(frame, in_flight, outcomes, info, retire)
                continue
            now = time.monotonic()
            if now - head_since > self.timeout:
                self.stats.timeouts += 1
                retire(next(iter(in_flight)), f"no reply within {self.timeout:g} s")
            if now - quiet_since >= self.silence:
                raise LinkError(f"device {self.url} sent no valid frame for {now - quiet_since:.1f}"
                                f" s while {len(in_flight)} requests waited (silence limit "
                                f"{self.silence:g} s): it is connected but not answering")

    def _complete(self, frame, in_flight, outcomes, info, retire) -> None:
        if frame.type == wire.Msg.RESULT:
            try:
                ticks, output = wire.parse_result(frame.payload, info.output_size)
            except wire.FrameError as exc:
                retire(frame.seq, f"malformed RESULT: {exc}")
                return
            outcome = outcomes[in_flight[frame.seq]]
            outcome.ticks = ticks
            outcome.output = output.reshape(info.output_shape)
            retire(frame.seq, None)
        elif frame.type == wire.Msg.ERROR:
            self.stats.device_errors += 1
            try:
                code, text = wire.parse_error(frame.payload)
            except wire.FrameError:
                code, text = 0, "malformed ERROR reply"
            # A model failure is deterministic: resending the same input cannot help.
            retire(frame.seq, f"device error {code}: {text}", retry=code != wire.ErrorCode.MODEL)
        else:
            retire(frame.seq, f"unexpected reply type 0x{frame.type:02x}")
