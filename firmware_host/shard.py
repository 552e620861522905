"""``verify`` across many devices at once: one thread and one Link per device, all fed from
one queue of images, one merged report.

Why a shared queue of single images rather than fixed shards: a fast device simply takes more,
and a device that dies hands what it had taken but not answered back to the queue, where the
others pick it up; nothing is assigned twice and nothing is lost. A device's stream ends
whenever the queue runs dry (its window drains, then it waits for more), so the main thread
can always finish a batch before it queues the next ones; at most LOOKAHEAD batches are held.

The main thread computes the host references for each batch on a worker thread (as a single
run does) and folds the outcomes into one Tally in input order, so the result is image for
image that of a single-device run; ``VerifyResult.devices`` adds per-device figures.
"""
from __future__ import annotations

import io
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from firmware_host.devices import LOCAL_DEVICES, resolve_device, start_device
from firmware_host.link import InferOutcome, Link, LinkError
from firmware_host.references import BadInput, References
from firmware_host.summary import Tally, VerifyResult
from runtime.errors import TinyconvError
from runtime.progress import Progress
from runtime.threads import one_blas_thread

LOOKAHEAD = 2  # batches queued or in flight beyond the one being completed
DRY_WAIT = 0.005  # seconds a device's stream waits for more work before it drains


class DevicesDisagree(TinyconvError):
    """The devices of one run do not all run this export's model."""


def expand_devices(devices, count: int | None) -> list[str]:
    """``--device A --device B`` as given, or ``--devices N``: N local instances of the one
    device named (a path or URL names one device, so it cannot be repeated)."""
    devices = list(devices or ["host"])
    named = [d for d in devices if d not in LOCAL_DEVICES]  # a path, URL or labgrid place
    twice = next((d for d in named if named.count(d) > 1), None)
    if twice is not None:  # two links on one port would read each other's replies
        raise TinyconvError(f"--device {twice} is given twice; it names one device")
    if count is None:
        return devices
    if count < 1:
        raise TinyconvError(f"--devices must be at least 1, got {count}")
    if len(devices) != 1:
        raise TinyconvError("--devices N starts N instances of one local device: name at most "
                            "one --device with it")
    if devices[0] not in LOCAL_DEVICES:
        resolve_device(devices[0], None)  # a typo is named as one
        raise TinyconvError(f"--devices {count}: {devices[0]} is one device someone else runs; "
                            "list several with --device instead")
    return devices * count


def labels_for(devices: list[str]) -> list[str]:
    """Names for the report: repeated names get ``#1``, ``#2``, ..."""
    return [f"{d}#{devices[:i].count(d) + 1}" if devices.count(d) > 1 else d
            for i, d in enumerate(devices)]


@dataclass
class DeviceRun:
    """One device's share of the run, and what happened to it."""

    label: str
    link: Link
    target: str = ""
    images: int = 0
    ticks_total: int = 0
    ticks_count: int = 0
    first: float | None = None  # perf_counter when it started, and at its last answer
    last: float | None = None
    died: str | None = None
    handed_over: list = field(default_factory=list)  # indices it took but never answered

    def as_dict(self) -> dict:
        seconds = (self.last - self.first) if self.first is not None and self.last else 0.0
        return {"device": self.label, "url": self.link.url, "target": self.target,
                "images": self.images, "seconds": seconds,
                "images_per_s": self.images / seconds if seconds > 0 else 0.0,
                "ticks_per_inference": (self.ticks_total / self.ticks_count
                                        if self.ticks_count else None),
                "ticks_unit": "us" if self.target == "host" else "instructions",
                "died": self.died, "handed_over": len(self.handed_over),
                "link": self.link.stats.as_dict()}


def _worker(run: DeviceRun, work: queue.Queue, results: queue.Queue,
            stop: threading.Event) -> None:
    """Take images from ``work`` until ``stop``; every answer (and finally a death notice with
    the images taken but not answered, handed back to ``work``) goes to ``results``."""
    while not stop.is_set():
        try:
            first = work.get(timeout=0.05)
        except queue.Empty:
            continue
        taken = [first]  # global indices, in the order the link numbered them

        def stream():
            item = first
            while True:
                yield item[1]
                if stop.is_set():  # the run is over (an error, Ctrl-C): take no more
                    return
                try:
                    item = work.get(timeout=DRY_WAIT)
                except queue.Empty:
                    return
                taken.append(item)

        answered = set()
        run.first = time.perf_counter() if run.first is None else run.first
        try:
            for outcome in run.link.infer_many(stream()):
                outcome.index = taken[outcome.index][0]
                outcome.device = run.label
                answered.add(outcome.index)
                run.last = time.perf_counter()
                run.images += 1
                if outcome.ok:
                    run.ticks_total += outcome.ticks
                    run.ticks_count += 1
                results.put(("done", outcome.index, outcome))
        except LinkError as exc:
            lost = [item for item in taken if item[0] not in answered]
            run.died = str(exc)
            run.handed_over = [index for index, _ in lost]
            for item in lost:
                work.put(item)
            results.put(("died", run, None))
            return
        except BaseException as exc:  # a bug or bad input: the main thread re-raises it
            results.put(("error", run, exc))
            return


def _check_models(runs: list[DeviceRun], infos, model, export_dir: Path) -> None:
    if all(info.model_hash == model.hash for info in infos):
        return
    found = ", ".join(f"{run.label} runs {info.model_name!r} {info.model_hash}"
                      for run, info in zip(runs, infos))
    raise DevicesDisagree(f"the devices must all run {export_dir / 'model.tcm'} "
                          f"({model.name!r} {model.hash}): {found}")


def verify_many(export_dir, model, refs: References, total: int, batches, label_note, *,
                devices: list[str], baud: int, timeout: float | None, window: int,
                retries: int, silence: float | None, progress: bool,
                write_report) -> VerifyResult:
    """The sharded run behind ``verify(..., devices=[...])``; arguments as verify()'s."""
    from firmware_host.verify import _handshake

    export_dir = Path(export_dir)
    for device in devices:
        resolve_device(device, export_dir)  # a typo fails before anything starts
    labels = labels_for(devices)
    with ExitStack() as stack:
        runs = []
        for device, label in zip(devices, labels):
            dev = stack.enter_context(start_device(device, export_dir))
            wait = timeout if timeout is not None else (2.0 if device == "host" else 10.0)
            link = stack.enter_context(Link(dev.url, baud=baud, timeout=wait, window=window,
                                            retries=retries, connect_timeout=dev.connect_timeout,
                                            silence=silence))
            runs.append(DeviceRun(label, link))
        infos = []
        for run in runs:
            run.link.sync()
            infos.append(run.link.info())
            run.target = infos[-1].target
        _check_models(runs, infos, model, export_dir)
        result = None
        for run in runs:  # shapes and notes, as a single run checks them
            result = _handshake(run.link, model, refs, export_dir, run.label)
        result.device = ", ".join(labels)
        result.target = ", ".join(dict.fromkeys(run.target for run in runs))
        result.inputs = total
        if label_note:
            result.notes.append(label_note)
        pool = stack.enter_context(ThreadPoolExecutor(1))
        stack.enter_context(one_blas_thread())
        bar = Progress(total, "verify", stream=None if progress else io.StringIO())
        try:
            _run(runs, refs, pool, batches, Tally(result, model), bar)
        except LinkError as exc:
            result.aborted = str(exc)
            result.unfinished = [{"index": o.index, "attempts": o.attempts,
                                  "failures": o.failures, "ok": o.ok}
                                 for o in getattr(exc, "unfinished", ())]
            exc.result = result
            _report(result, runs, write_report)
            raise
        # an interrupted run (Ctrl-C) writes no report, as a single device's does: a report of
        # the images done so far would say exit_status 0 for a run that was not finished
        _report(result, runs, write_report)
    return result


def _report(result: VerifyResult, runs: list[DeviceRun], write_report) -> None:
    result.devices = [run.as_dict() for run in runs]
    result.link = _sum_links(runs)
    for run in runs:
        if run.died is not None:
            result.notes.append(
                f"device {run.label} stopped after {run.images} images ({run.died}); "
                f"its {len(run.handed_over)} unanswered images went to the others")
    write_report(result)


def _sum_links(runs: list[DeviceRun]) -> dict:
    total: dict = {}
    for run in runs:
        for key, value in run.link.stats.as_dict().items():
            total[key] = max(total.get(key, 0), value) if key == "longest_silence" \
                else total.get(key, 0) + value
    return total


def _run(runs, refs: References, pool, batches, tally: Tally, bar: Progress) -> None:
    """Feed batches to the devices, fold their outcomes into ``tally`` batch by batch in input
    order. When every device has died with images left, the run ends with a LinkError whose
    ``result`` is the tally so far (the images verified are kept)."""
    work: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    threads = [threading.Thread(target=_worker, args=(run, work, results, stop), daemon=True,
                                name=f"tinyconv-device-{run.label}") for run in runs]
    pending: list = []  # [batch, future of its references, {index: outcome}], input order
    source = iter(batches)
    exhausted = False
    alive = len(runs)
    started = time.perf_counter()

    def feed() -> None:
        nonlocal exhausted
        while not exhausted and len(pending) <= LOOKAHEAD:
            try:
                start, x, y = next(source)
            except StopIteration:
                exhausted = True
                return
            try:
                batch = refs.batch(start, x, y)
            except BadInput as exc:  # verify the inputs before it, then stop
                tally.r.aborted = str(exc)
                exhausted = True
                good = exc.index - start
                if not good:
                    return
                batch = refs.batch(start, x[:good], None if y is None else y[:good])
            pending.append([batch, pool.submit(refs.compute, batch), {}])
            for i, row in enumerate(batch.x_q):
                work.put((start + i, row))

    try:
        feed()
        for thread in threads:
            thread.start()
        while pending:
            head = pending[0]
            if len(head[2]) == len(head[0].x_q):
                pending.pop(0)
                outcomes = [head[2][i] for i in sorted(head[2])]
                tally.add(head[0], outcomes, head[1].result())
                bar.update(len(outcomes))
                feed()
                continue
            if alive == 0:
                missing = sum(len(p[0].x_q) - len(p[2]) for p in pending)
                raise _all_died(runs, missing)
            kind, what, payload = results.get()
            if kind == "done":
                for entry in pending:
                    if entry[0].start <= what < entry[0].start + len(entry[0].x_q):
                        entry[2][what] = payload
                        break
            elif kind == "died":
                alive -= 1
            else:
                raise payload
    except LinkError as exc:
        # Tally the answered head of the first unfinished batch, so every image answered in
        # input order before the gap is on record; the rest are listed as unfinished.
        head = pending[0] if pending else None
        if head is not None:
            answered = []
            for i in range(head[0].start, head[0].start + len(head[0].x_q)):
                if i not in head[2]:
                    break
                answered.append(head[2][i])
            if answered:
                tally.add(head[0], answered, head[1].result())
        exc.unfinished = [InferOutcome(i) for p in pending
                          for i in range(p[0].start, p[0].start + len(p[0].x_q))
                          if i >= tally.r.images]
        raise
    finally:
        stop.set()
        bar.close()
        tally.r.seconds = time.perf_counter() - started
        tally.finish()
        for thread in threads:
            thread.join(timeout=0.5)


def _all_died(runs, missing: int) -> LinkError:
    why = "; ".join(f"{run.label}: {run.died}" for run in runs)
    return LinkError(f"every device stopped answering with {missing} images left ({why})")
