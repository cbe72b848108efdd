"""A command's process: its large imports without garbage collection, its end without the final ones.

torch, tensordict (which imports torch's compiler, ``torch._dynamo``), MLflow and SQLAlchemy
create about half a million long-lived objects at import, and next to no garbage. Python's
collector, triggered by allocations, traverses them again and again while they are
created, and once more at exit. The command's imports run with collection paused and are
frozen afterwards, so later collections skip them; MLflow's connection runs with collection
paused. Measured on the development machine, for the stages of a tiny tracked pipeline (CPU
seconds, median of 3, before -> after this module and the lazy ``scipy.stats`` import of
:mod:`reservoir_dqn.evaluation.statistics`, which is 0.7 s of plot's): train 7.3 -> 5.9, evaluate
5.7 -> 4.9, plot 7.2 -> 5.1.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn


class Terminated(BaseException):
    """SIGTERM arrived (what CI runners, job schedulers and ``kill`` send): unwind like Ctrl-C.

    A :class:`BaseException`, as :class:`KeyboardInterrupt` is, so that no ``except
    Exception`` swallows it: every ``finally`` and ``except BaseException`` on the way runs,
    which is where runs are ended as ``KILLED`` and temporary outputs removed.
    """


def interruption(error: BaseException) -> BaseException | None:
    """The :class:`KeyboardInterrupt` or :class:`Terminated` behind ``error``: itself, or one handled when it rose.

    A signal can land inside a library's clean-up code, which may then fail on its own (a
    context manager's exit raising while the interrupt unwinds through it): the signal is
    what happened, and what the user is told.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (KeyboardInterrupt, Terminated)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def collection_paused(freeze: bool) -> Iterator[None]:
    """Pause garbage collection for a block of imports; with ``freeze``, freeze every object alive after it.

    Frozen objects are never traversed again, which is right for modules, classes and
    functions: they live as long as the process. But they are never freed either, so only
    a command's entry point freezes; code that may run inside a longer-lived process (a
    test, a notebook) only pauses. Collection then resumes as it was.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


def exit_process(status: int) -> NoReturn:
    """End a command's process with ``status``, without the interpreter's final garbage collections.

    Every output is written by then. Those collections would traverse each object that torch
    and its compiler modules created at import, about a second of a 2-core machine's time;
    frozen objects are skipped, and everything else of the shutdown (``atexit``, closing
    files) happens as usual.
    """
    gc.freeze()
    sys.exit(status)


_received: list[int] = []  # the signals the block's handlers saw, in order


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` and SIGINT :class:`KeyboardInterrupt`
    in the main thread, and each is recorded, so that :func:`raise_pending` raises it again
    where a library swallowed the first exception (a bare ``except`` in a callback it made).

    The first SIGTERM unwinds; a second one, during the clean-up, ends the process at once
    (the default action), as schedulers expect when they insist. SIGINT keeps Python's own
    behaviour otherwise (each one raises), and stays ignored where the process was started
    with it ignored (a background job). Outside the main thread, where Python cannot install
    handlers, the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        _received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        _received.append(signum)
        raise KeyboardInterrupt()

    _received.clear()
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, terminate)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()


def raise_pending() -> None:
    """Raise the signal the handlers of :func:`signals_raise` saw, if any (a loop calls it once an iteration).

    An exception that reached the stage never comes back here; one that a library swallowed
    does, and the loop ends as the signal asked.
    """
    if _received:
        raise KeyboardInterrupt() if _received[-1] == signal.SIGINT else Terminated()
