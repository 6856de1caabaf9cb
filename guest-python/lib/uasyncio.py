"""MicroPython's asyncio for usocket guests: an event loop over one `uselect.poll` object.

CPython's asyncio wants OS file descriptors and selectors, which a guest does not have. This
module implements MicroPython's asyncio API (a subset of CPython's) on `usocket`, `uselect` and
`utime` alone; user programs `import asyncio` and get this module.

Design
------
- A `Task` drives one coroutine with `send`/`throw`. When a coroutine must wait, an awaitable
  deep inside it yields a small *request* to the loop, a tuple:

    None                         run me again after the other ready tasks (`sleep(0)`)
    (_PARK, wait_list, deadline) wait until someone wakes me (an `Event`, a `Lock`, a `Task`
                                 I await keeps me in its `wait_list`), or until `deadline`
    (_IO, sock, POLLIN|POLLOUT)  wait until `sock` is readable / writable (or fails)

- The loop owns a **run queue** (tasks ready to run, in order), a **timer heap** (parked tasks
  with a deadline, soonest first) and **one poll object**. Each task waiting on a socket is
  listed under that socket with the event it waits for; before each poll the socket is
  registered in the poll object for its waiters' events. It stays registered when they wake,
  until an event nobody waits for fires, so a task that reads, works and waits again costs no
  register call.
- One round of the loop: poll with a timeout of 0 if tasks are ready, else until the nearest
  timer (or forever if only sockets can wake anything); wake the tasks whose sockets are ready
  and whose timers expired; then run once each task that was ready at the start of the round.
  There is no busy-waiting: an idle loop sleeps in `poll`.
- A task waits on one thing at a time, perhaps with a deadline. Waking it (by an event, a
  socket, a timer or `cancel`) detaches it from everything it waited on, so whichever comes
  first wins and the others are forgotten. Cancelling throws `CancelledError` into the
  coroutine where it waits.
- Sockets are non-blocking; every operation is tried after poll says it may succeed, and
  EAGAIN means "wait again". Errors are `OSError` whose `errno` is the contract's (Linux)
  number; code checks `.errno`, never the exception class. `getaddrinfo` blocks.

Differences from MicroPython (each a choice): `asyncio.run` cancels the tasks still pending
when its main coroutine ends and lets them finish (as CPython); `run_until_complete` raises
RuntimeError instead of returning when nothing can ever wake its task (a deadlock);
`TimeoutError` is the builtin one (as CPython 3.11+); `Stream.close` closes the socket (after
sending what `write` buffered) rather than waiting for `wait_closed`; `open_connection` tries
each address `getaddrinfo` gives and raises the connect error (e.g. ECONNREFUSED) itself, and
with `ssl` finishes the TLS handshake before it returns (so it raises a verification error
such as ENOKEY itself, as CPython does; `ssl=True` is a verifying `tls.SSLContext`).

TLS (`ssl=` of `open_connection` and `start_server`, an `SSLContext` of the `tls` or `ssl`
module) runs in the host under the socket: the streams read and write plaintext through an
`SSLSocket`. While a handshake waits for the peer, the socket is writable yet takes no data:
a stream that finds so waits for the peer's data (POLLIN) before it tries again, instead of
spinning on POLLOUT.
"""

import sys
import heapq
import traceback
from collections import deque

import usocket
import uselect
import utime

# Errno numbers of the contract (Linux's). Not CPython's `errno`: in a guest it has WASI's.
_EBADF = 9
_EAGAIN = 11
_ECONNABORTED = 103
_EISCONN = 106
_EALREADY = 114
_EINPROGRESS = 115

_POLLIN = getattr(uselect, "POLLIN", 1)
_POLLOUT = getattr(uselect, "POLLOUT", 4)
# Reported without being asked for: POLLERR, POLLHUP and 32 (a closed socket). Any of them
# wakes every task waiting on the socket; its next operation tells what happened.
_POLLFAIL = getattr(uselect, "POLLERR", 8) | getattr(uselect, "POLLHUP", 16) | 32

_RECV_CHUNK = 32768  # bytes asked of one recv
_SEND_CHUNK = 65536  # bytes offered to one send
_ACCEPT_BATCH = 16  # connections a server accepts per wake-up before it yields
_ACCEPT_RETRY_MS = 100  # pause after an accept error other than EAGAIN (e.g. ENOMEM)

# Requests a coroutine yields to the loop (see the module docstring).
_PARK = 1
_IO = 2
# What a parked task is resumed with when its deadline passes.
_TIMEOUT = object()

# Task states.
_QUEUED = 0  # in the run queue
_RUNNING = 1
_WAITING = 2  # parked, on the timer heap, or waiting on a socket
_DONE = 3


class CancelledError(BaseException):
    """Thrown into a task's coroutine by `Task.cancel`."""


# CPython 3.11+ uses the builtin; `except asyncio.TimeoutError` and `except TimeoutError`
# both work.
TimeoutError = TimeoutError


class IncompleteReadError(EOFError):
    """`Stream.readexactly` met the end of the stream; `partial` holds what was read."""

    def __init__(self, partial, expected):
        msg = "%d bytes read on a total of %d expected bytes" % (len(partial), expected)
        EOFError.__init__(self, msg)
        self.partial = partial
        self.expected = expected


class _Request:
    """An awaitable that yields one request to the loop and returns what the task is woken with."""

    __slots__ = ("req",)

    def __init__(self, req):
        self.req = req

    def __await__(self):
        return (yield self.req)


def _park(wait_list=None, deadline=None):
    return _Request((_PARK, wait_list, deadline))


def _io_wait(sock, event):
    return _Request((_IO, sock, event))


# ---------------------------------------------------------------------------------------------
# Tasks


class Task:
    """A coroutine scheduled on the loop (made by `create_task`).

    Awaiting a task waits for it to end and returns its result (or raises its exception,
    `CancelledError` if it was cancelled); a task can be awaited any number of times.
    """

    def __init__(self, coro, loop, name=None):
        self.coro = coro
        self.name = name
        self._loop = loop
        self._state = _QUEUED
        self._send = None  # what the next step resumes the coroutine with ...
        self._throw = None  # ... or throws into it
        self._must_cancel = False  # cancel() while running: throw at its next wait
        self._result = None
        self._exc = None
        self._waiters = []  # tasks awaiting this one, and callbacks cb(task)
        # What the task waits on while _WAITING (each None when unused):
        self._wait_list = None  # a list holding it (Event, Lock, Task waiters)
        self._wait_io = None  # (_IOEntry, the entry's readers or writers list)
        self._park_id = 0  # tells its current timer-heap entry from stale ones
        self._has_timer = False

    def __repr__(self):
        return "<Task %s coro=%r>" % (self.name or hex(id(self)), self.coro)

    def done(self):
        """Whether the task has ended (returned, raised, or was cancelled)."""
        return self._state == _DONE

    def cancel(self, msg=None):
        """Throws `CancelledError` into the task where it waits; False if it already ended.

        A task may cancel itself: the error is thrown at its next wait.
        """
        if self._state == _DONE:
            return False
        exc = CancelledError() if msg is None else CancelledError(msg)
        if self._state == _RUNNING:
            self._must_cancel = True
        elif self._state == _WAITING:
            self._loop._wake(self, None, exc)
        else:  # queued: whatever it was woken with is replaced
            self._send, self._throw = None, exc
        return True

    def __await__(self):
        if self._state != _DONE:
            yield (_PARK, self._waiters, None)
        return self._outcome()

    def _outcome(self):
        if self._exc is not None:
            raise self._exc
        return self._result

    def _finish(self, result, exc):
        self._state = _DONE
        self._result, self._exc = result, exc
        self._loop._live.pop(self, None)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if isinstance(w, Task):
                w._wait_list = None  # it leaves `waiters` as a whole
                self._loop._wake(w)
            else:
                w(self)
        if not waiters and isinstance(exc, Exception):
            self._loop.call_exception_handler(
                {"message": "Task exception wasn't retrieved", "exception": exc, "future": self}
            )


# ---------------------------------------------------------------------------------------------
# The loop


class _IOEntry:
    """The tasks waiting on one socket, and the events the poll object has for it now."""

    __slots__ = ("sock", "readers", "writers", "mask", "dirty", "idle")

    def __init__(self, sock):
        self.sock = sock
        self.readers = []
        self.writers = []
        self.mask = 0  # registered in the poll object with this mask (0: not registered)
        self.dirty = False  # waiters changed since the registration was last brought up to date
        self.idle = False  # the last poll reported an event nobody waited for

    def wanted(self):
        return (_POLLIN if self.readers else 0) | (_POLLOUT if self.writers else 0)


class Loop:
    """The event loop: a run queue, a timer heap and one poll object (see the module docstring).

    There is one loop at a time (`get_event_loop`); `new_event_loop` replaces it with an empty one.
    """

    def __init__(self):
        self._runq = deque()
        self._timers = []  # heap of (deadline_ms, seq, task, park_id)
        self._seq = 0
        self._stale = 0  # timer entries whose task was woken otherwise
        self._poll = None  # the uselect.poll object, made when first needed
        self._io = {}  # id(sock) -> _IOEntry
        self._dirty = []  # _IOEntry whose registration may be out of date
        self._io_waiting = 0  # tasks waiting on sockets
        self._live = {}  # pending tasks, in creation order (a dict as an ordered set)
        self._current = None
        self._running = False
        self._stopping = False
        self._handler = None
        # Nothing here asks the host for anything: a guest component may be built with this
        # module imported (a snapshot), long before it runs.
        self._ticks = None
        self._ms = 0  # milliseconds since the loop first looked; never wraps, unlike ticks

    # -- clock

    def _now(self):
        t = utime.ticks_ms()
        if self._ticks is None:
            self._ticks = t
        d = utime.ticks_diff(t, self._ticks)
        self._ticks = t
        if d > 0:
            self._ms += d
        return self._ms

    # -- public API

    def create_task(self, coro, name=None):
        """Schedules a coroutine to run; returns its `Task`."""
        if not hasattr(coro, "send"):
            raise TypeError("coroutine expected")
        t = Task(coro, self, name)
        self._live[t] = None
        self._runq.append(t)
        return t

    def run_forever(self):
        """Runs until `stop()` is called, or until nothing can run any more (no ready task,
        no timer and no task waiting on a socket)."""
        self._enter()
        try:
            while not self._stopping and self._run_once():
                pass
        finally:
            self._stopping = False
            self._running = False

    def run_until_complete(self, aw):
        """Runs until `aw` (a coroutine or a task) ends; returns its result or raises its error.

        Raises RuntimeError if the loop has nothing left that could ever end `aw` (a deadlock).
        """
        task = aw if isinstance(aw, Task) else self.create_task(_as_coroutine(aw))
        task._waiters.append(_retrieve)
        self._enter()
        try:
            while task._state != _DONE:
                if not self._run_once():
                    raise RuntimeError("deadlock: %r waits for what nothing can wake" % task)
        finally:
            self._running = False
        return task._outcome()

    def stop(self):
        """Makes `run_forever` return at the end of the current round."""
        self._stopping = True

    def close(self):
        """Drops every task without running it again and stops polling its sockets."""
        if self._running:
            raise RuntimeError("cannot close a running event loop")
        for e in self._io.values():
            if e.mask:
                try:
                    self._poll.unregister(e.sock)
                except OSError:
                    pass
        self._io.clear()
        self._dirty = []
        self._runq.clear()
        self._timers = []
        self._live.clear()
        self._io_waiting = 0

    def set_exception_handler(self, handler):
        """`handler(loop, context)` is called for an error of a task nobody awaits."""
        self._handler = handler

    def get_exception_handler(self):
        return self._handler

    def default_exception_handler(self, loop, context):
        """Prints the message, the task and the traceback to stderr."""
        print(context["message"], file=sys.stderr)
        if "future" in context:
            print("future:", context["future"], file=sys.stderr)
        exc = context.get("exception")
        if exc is not None:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)

    def call_exception_handler(self, context):
        if self._handler is not None:
            self._handler(self, context)
        else:
            self.default_exception_handler(self, context)

    def get_debug(self):
        return False

    # -- running

    def _enter(self):
        if self._running:
            raise RuntimeError("this event loop is already running")
        self._running = True

    def _run_once(self):
        """One round: wait for sockets or the nearest timer, wake tasks, run the ready ones.

        Returns False, having done nothing, if nothing could ever become ready.
        """
        timers = self._timers
        while timers and not self._timer_valid(timers[0]):
            heapq.heappop(timers)
            self._stale -= 1
        if self._runq:
            timeout = 0
        elif timers:
            timeout = max(0, timers[0][0] - self._now())
        elif self._io_waiting:
            timeout = -1
        else:
            return False

        self._update_registrations()
        if self._io:
            for sock, ev in self._poll.poll(timeout):
                self._io_event(sock, ev)
        elif timeout > 0:
            utime.sleep_ms(timeout)

        if timers:
            now = self._now()
            while timers and timers[0][0] <= now:
                entry = heapq.heappop(timers)
                if self._timer_valid(entry):
                    entry[2]._has_timer = False  # this entry has left the heap
                    self._wake(entry[2], _TIMEOUT)
                else:
                    self._stale -= 1

        runq = self._runq
        for _ in range(len(runq)):
            self._step(runq.popleft())
        return True

    def _step(self, task):
        """Resumes the task's coroutine until it waits again or ends."""
        send, throw = task._send, task._throw
        task._send = task._throw = None
        task._state = _RUNNING
        self._current = task
        try:
            if throw is None:
                req = task.coro.send(send)
            else:
                req = task.coro.throw(throw)
        except StopIteration as e:
            self._current = None
            task._finish(e.value, None)
            return
        except BaseException as e:
            self._current = None
            task._finish(None, e)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            return
        self._current = None

        if task._must_cancel:
            task._must_cancel = False
            self._queue(task, None, CancelledError())
        elif req is None:
            self._queue(task, None, None)
        elif type(req) is tuple and req[0] == _PARK:
            task._state = _WAITING
            task._park_id += 1
            if req[1] is not None:
                req[1].append(task)
                task._wait_list = req[1]
            if req[2] is not None:
                self._seq += 1
                heapq.heappush(self._timers, (req[2], self._seq, task, task._park_id))
                task._has_timer = True
        elif type(req) is tuple and req[0] == _IO:
            task._state = _WAITING
            self._wait_io(task, req[1], req[2])
        else:
            err = RuntimeError("a task awaited something that is not this loop's: %r" % (req,))
            self._queue(task, None, err)

    def _queue(self, task, send, throw):
        task._state = _QUEUED
        task._send, task._throw = send, throw
        self._runq.append(task)

    def _wake(self, task, send=None, throw=None):
        """Queues a waiting task, detaching it from everything it waited on."""
        if task._state != _WAITING:
            return
        lst = task._wait_list
        if lst is not None:
            task._wait_list = None
            try:
                lst.remove(task)
            except ValueError:
                pass
        if task._wait_io is not None:
            entry, lst = task._wait_io
            task._wait_io = None
            lst.remove(task)
            self._io_waiting -= 1
            self._mark_dirty(entry)
        if task._has_timer:
            task._has_timer = False
            self._stale += 1
            if self._stale > 32 and self._stale * 2 > len(self._timers):
                self._timers = [e for e in self._timers if self._timer_valid(e)]
                heapq.heapify(self._timers)
                self._stale = 0
        self._queue(task, send, throw)

    def _timer_valid(self, entry):
        task = entry[2]
        return task._state == _WAITING and task._has_timer and task._park_id == entry[3]

    # -- sockets

    def _wait_io(self, task, sock, event):
        entry = self._io.get(id(sock))
        if entry is None:
            entry = self._io[id(sock)] = _IOEntry(sock)
        lst = entry.readers if event == _POLLIN else entry.writers
        lst.append(task)
        task._wait_io = (entry, lst)
        entry.idle = False
        self._io_waiting += 1
        self._mark_dirty(entry)

    def _mark_dirty(self, entry):
        if not entry.dirty:
            entry.dirty = True
            self._dirty.append(entry)

    def _update_registrations(self):
        """Before a poll: makes the poll object watch every event a waiting task wants.

        Events nobody waits for any more stay registered until they fire (see `_io_event`),
        so a task that wakes, works a little and waits again costs no register calls.
        """
        dirty, self._dirty = self._dirty, []
        for e in dirty:
            e.dirty = False
            if self._io.get(id(e.sock)) is not e:
                continue  # forgotten meanwhile
            want = e.wanted()
            if want & ~e.mask or not (want or e.mask):
                self._set_mask(e, want)

    def _set_mask(self, e, want):
        """Registers e's socket with `want`; with 0, unregisters it and forgets the entry."""
        try:
            if want:
                if self._poll is None:
                    self._poll = uselect.poll()
                self._poll.register(e.sock, want)
            elif e.mask:
                self._poll.unregister(e.sock)
        except Exception as err:  # e.g. not a socket: its waiters get the error
            self._io.pop(id(e.sock), None)
            for t in e.readers + e.writers:
                self._wake(t, None, err)
            return
        e.mask = want
        if not want:
            del self._io[id(e.sock)]

    def _io_event(self, sock, ev):
        e = self._io.get(id(sock))
        if e is None:
            self._poll.unregister(sock)
            return
        # An event nobody waits for would end every poll at once (poll is level-triggered):
        # if it fires twice in a row, the socket is registered for what its waiters want
        # now, or unregistered.
        unwanted = (
            (ev & _POLLIN and not e.readers)
            or (ev & _POLLOUT and not e.writers)
            or (ev & _POLLFAIL and not (e.readers or e.writers))
        )
        if ev & (_POLLIN | _POLLFAIL):
            for t in e.readers[:]:
                self._wake(t)
        if ev & (_POLLOUT | _POLLFAIL):
            for t in e.writers[:]:
                self._wake(t)
        if not unwanted:
            e.idle = False
        elif e.idle:
            self._set_mask(e, e.wanted())
        else:
            e.idle = True  # its task may be about to wait again: give it one round

    def _forget(self, sock):
        """Before `sock` is closed: stop polling it; its waiters wake (and will see EBADF)."""
        entry = self._io.pop(id(sock), None)
        if entry is None:
            return
        for t in entry.readers + entry.writers:
            self._wake(t)
        if entry.mask:
            entry.mask = 0
            try:
                self._poll.unregister(sock)
            except OSError:
                pass


def _retrieve(task):
    """A waiter callback that only marks the task's outcome as looked after."""


_loop = Loop()


def get_event_loop(runq_len=0, waitq_len=0):
    """The event loop (MicroPython's arguments are accepted and ignored)."""
    return _loop


def get_running_loop():
    if not _loop._running:
        raise RuntimeError("no running event loop")
    return _loop


def new_event_loop():
    """Replaces the loop with an empty one (its tasks are dropped) and returns it."""
    global _loop
    _loop.close()
    _loop = Loop()
    return _loop


def create_task(coro, name=None):
    """Schedules a coroutine to run concurrently; returns its `Task`."""
    return _loop.create_task(coro, name)


def current_task():
    """The task running now."""
    t = _loop._current
    if t is None:
        raise RuntimeError("no running task")
    return t


def run(coro):
    """Runs `coro` to its end and returns its result; then cancels the tasks still pending and
    lets them finish (their `finally` blocks run)."""
    loop = _loop
    if loop._running:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    try:
        return loop.run_until_complete(create_task(coro))
    finally:
        pending = list(loop._live)
        for t in pending:
            t.cancel()
        loop._enter()
        try:
            while any(t._state != _DONE for t in pending) and loop._run_once():
                pass
        finally:
            loop._running = False


def _as_coroutine(aw):
    if hasattr(aw, "send"):
        return aw
    if hasattr(aw, "__await__"):

        async def wrap():
            return await aw

        return wrap()
    raise TypeError("an awaitable is required, not %r" % (aw,))


def _as_task(aw):
    return aw if isinstance(aw, Task) else _loop.create_task(_as_coroutine(aw))


# ---------------------------------------------------------------------------------------------
# Sleeping, timeouts, gathering


def _ms_from_s(t):
    return int(t * 1000 + 0.5)


async def sleep_ms(t):
    """Waits `t` milliseconds (0 or less: lets the other ready tasks run first)."""
    if t <= 0:
        await _Request(None)
    else:
        await _park(None, _loop._now() + int(t))


async def sleep(t, result=None):
    """Waits `t` seconds (a float); returns `result`."""
    await sleep_ms(_ms_from_s(t))
    return result


async def _join(task):
    """Waits for the task to end, without raising its error."""
    if task._state != _DONE:
        await _park(task._waiters)


async def wait_for(aw, timeout):
    """Awaits `aw` (a coroutine or a task) for at most `timeout` seconds (None: no limit).

    When time runs out, `aw` is cancelled, and once it has ended TimeoutError is raised.
    Cancelling the waiting task cancels `aw` too.
    """
    if timeout is None:
        return await aw
    return await wait_for_ms(aw, _ms_from_s(timeout))


async def wait_for_ms(aw, timeout):
    """`wait_for` with the timeout in milliseconds."""
    if timeout is None:
        return await aw
    task = _as_task(aw)
    if task._state != _DONE:
        try:
            woke = await _park(task._waiters, _loop._now() + max(0, int(timeout)))
        except CancelledError:
            task.cancel()
            await _join(task)
            raise
        if woke is _TIMEOUT and task._state != _DONE:
            task.cancel()
            await _join(task)
            if isinstance(task._exc, CancelledError):
                raise TimeoutError from None
    return task._outcome()


async def gather(*aws, return_exceptions=False):
    """Runs the awaitables concurrently (coroutines become tasks); returns their results in order.

    With `return_exceptions`, an error takes the place of its result; without, the first error
    is raised at once (the other tasks go on running). Cancelling `gather` cancels them all.
    """
    tasks = [_as_task(a) for a in aws]
    me = current_task() if tasks else None
    pending = [t for t in tasks if t._state != _DONE]
    state = {"left": len(pending), "over": False}

    def ended(t):
        state["left"] -= 1
        if state["over"]:
            return
        if state["left"] == 0 or (t._exc is not None and not return_exceptions):
            state["over"] = True
            _loop._wake(me)

    for t in pending:
        t._waiters.append(ended)  # stays after gather returns: a later error counts as seen
    failed = any(t._state == _DONE and t._exc is not None for t in tasks)
    if pending and (return_exceptions or not failed):
        try:
            await _park()
        except CancelledError:
            for t in tasks:
                t.cancel()
            raise
        finally:
            state["over"] = True
    results = []
    for t in tasks:
        if t._state != _DONE:
            continue  # only when an earlier error is raised below
        if t._exc is not None and return_exceptions:
            results.append(t._exc)
        else:
            results.append(t._outcome())
    return results


# ---------------------------------------------------------------------------------------------
# Synchronisation


class Event:
    """A flag tasks can wait for: `set` wakes them all; it stays set until `clear`."""

    def __init__(self):
        self.state = False
        self.waiting = []

    def is_set(self):
        return self.state

    def set(self):
        self.state = True
        for t in self.waiting[:]:
            _loop._wake(t)

    def clear(self):
        self.state = False

    async def wait(self):
        if not self.state:
            await _park(self.waiting)
        return True


class ThreadSafeFlag(Event):
    """A flag one task waits for; `wait` clears it. (A guest has no threads or interrupts: this
    is `Event` with an automatic clear, for source compatibility.)"""

    async def wait(self):
        while not self.state:
            await _park(self.waiting)
        self.state = False


class Lock:
    """A mutual-exclusion lock; `release` hands it to the longest waiting task.

    Also an async context manager: `async with lock: ...`.
    """

    def __init__(self):
        self.state = False
        self.waiting = []
        self._handed = None  # the woken task the lock was handed to, until it runs

    def locked(self):
        return self.state

    def release(self):
        if not self.state:
            raise RuntimeError("Lock not acquired")
        if self.waiting:
            t = self.waiting[0]
            self._handed = t
            _loop._wake(t)  # the lock stays held: it is now that task's
        else:
            self.state = False

    async def acquire(self):
        if not self.state:
            self.state = True
            return True
        me = current_task()
        try:
            while True:
                await _park(self.waiting)
                if self._handed is me:
                    self._handed = None
                    return True
        except CancelledError:
            if self._handed is me:  # handed over, then cancelled before it could run
                self._handed = None
                self.release()
            raise

    async def __aenter__(self):
        return await self.acquire()

    async def __aexit__(self, exc_type, exc, tb):
        self.release()


# ---------------------------------------------------------------------------------------------
# Streams


def _send(sock, data):
    """One non-blocking send; the count sent (0 if the socket is full)."""
    try:
        n = sock.send(data)
    except OSError as e:
        if e.errno == _EAGAIN:
            return 0
        raise
    return n or 0


def _close_socket(sock):
    _loop._forget(sock)
    sock.close()


class Stream:
    """One TCP connection, read and written through the same object (MicroPython's choice:
    `open_connection` and a server's callback get it twice, as reader and writer).

    Reads are served from a receive buffer filled by `recv`; `write` sends what the socket takes
    at once and buffers the rest, which `drain` sends. `s` is the socket, `e` the extra info.
    """

    def __init__(self, s, e=None):
        self.s = s
        self.e = {} if e is None else e
        self._rbuf = bytearray()  # received, not yet read
        self._eof = False
        self._out = bytearray()  # written, not yet sent
        self._closed = False
        self._closer = None  # the task sending the rest of _out before the socket closes
        self._tls = hasattr(s, "getpeercert")  # a tls.SSLSocket (see _send_out)

    def get_extra_info(self, name, default=None):
        """"peername": the peer's (address, port); "socket": the socket."""
        if name == "socket":
            return self.s
        return self.e.get(name, default)

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        await self.aclose()

    # -- reading

    async def _fill(self):
        """Waits for the socket and appends one recv to the buffer; False at end of stream."""
        if self._eof:
            return False
        while True:
            await _io_wait(self.s, _POLLIN)
            try:
                data = self.s.recv(_RECV_CHUNK)
            except OSError as e:
                if e.errno == _EAGAIN:
                    continue
                raise
            if data is None:
                continue
            if not data:
                self._eof = True
                return False
            self._rbuf += data
            return True

    def _take(self, n):
        data = bytes(self._rbuf[:n])
        del self._rbuf[:n]
        return data

    async def read(self, n=-1):
        """Up to `n` bytes, at least one unless the stream ended (then b""); `read()` or
        `read(-1)` reads to the end of the stream."""
        if n < 0:
            while await self._fill():
                pass
            return self._take(len(self._rbuf))
        if n == 0:
            return b""
        if not self._rbuf:
            await self._fill()
        return self._take(n)

    async def readinto(self, buf):
        """Reads up to len(buf) bytes into `buf`; the count, 0 at the end of the stream."""
        if not self._rbuf:
            await self._fill()
        n = min(len(buf), len(self._rbuf))
        buf[:n] = self._rbuf[:n]
        del self._rbuf[:n]
        return n

    async def readexactly(self, n):
        """Exactly `n` bytes; `IncompleteReadError` (an EOFError) if the stream ends first."""
        while len(self._rbuf) < n:
            if not await self._fill():
                raise IncompleteReadError(self._take(len(self._rbuf)), n)
        return self._take(n)

    async def readline(self):
        """One line with its b"\\n"; at the end of the stream the last partial line, then b""."""
        start = 0
        while True:
            i = self._rbuf.find(b"\n", start)
            if i >= 0:
                return self._take(i + 1)
            start = len(self._rbuf)
            if not await self._fill():
                return self._take(len(self._rbuf))

    # -- writing

    def write(self, buf):
        """Sends `buf` (bytes; str is encoded as UTF-8) as far as the socket takes it now and
        buffers the rest for `drain`. A send error (e.g. EPIPE, ECONNRESET) is raised here or
        by `drain`."""
        if self._closed:
            raise OSError(_EBADF)
        if isinstance(buf, str):
            buf = buf.encode()
        if not buf:
            return
        if not self._out:
            n = _send(self.s, buf if isinstance(buf, bytes) else bytes(buf))
            if n >= len(buf):
                return
            buf = memoryview(buf)[n:]
        self._out += buf

    async def drain(self):
        """Waits until everything written has been sent. Always lets other tasks run."""
        if not self._out:
            await _Request(None)
            return
        await self._send_out()

    async def _send_out(self):
        """Sends what `write` buffered. A TLS socket that was writable but took nothing is in a
        handshake waiting for the peer: the next wait is for the peer's data (POLLIN), as
        POLLOUT would report it writable again at once."""
        event = _POLLOUT
        while self._out:
            await _io_wait(self.s, event)
            n = _send(self.s, bytes(self._out[:_SEND_CHUNK]))
            del self._out[:n]
            event = _POLLIN if self._tls and n == 0 and event == _POLLOUT else _POLLOUT

    async def awrite(self, buf, off=0, sz=-1):
        """MicroPython's `write` and `drain` in one: writes buf[off:off+sz] (sz -1: to the end)."""
        if off or sz != -1:
            buf = memoryview(buf)
            buf = buf[off:] if sz == -1 else buf[off:off + sz]
        self.write(buf)
        await self.drain()

    async def awritestr(self, s):
        await self.awrite(s.encode())

    # -- closing

    def close(self):
        """Closes the connection: at once if everything written was sent, else after a task has
        sent the rest (`wait_closed` waits for it)."""
        if self._closed:
            return
        self._closed = True
        if self._out:
            self._closer = _loop.create_task(self._flush_and_close())
        else:
            _close_socket(self.s)

    async def _flush_and_close(self):
        try:
            await self._send_out()
        except OSError:
            pass  # the peer is gone: what was left cannot be sent
        finally:
            self._out = bytearray()
            _close_socket(self.s)

    async def wait_closed(self):
        """Closes the stream (if not yet) and waits until the socket is closed."""
        self.close()
        if self._closer is not None:
            await _join(self._closer)

    async def aclose(self):
        """MicroPython's `close` and `wait_closed` in one."""
        await self.wait_closed()


StreamReader = Stream
StreamWriter = Stream


async def _connect(sock, addr):
    """Connects a non-blocking socket; raises the connect's error (e.g. ECONNREFUSED)."""
    try:
        sock.connect(addr)
        return
    except OSError as e:
        if e.errno != _EINPROGRESS:
            raise
    while True:
        await _io_wait(sock, _POLLOUT)
        try:
            sock.connect(addr)  # asks for the outcome
        except OSError as e:
            if e.errno == _EISCONN:
                return
            if e.errno in (_EALREADY, _EINPROGRESS):
                continue
            raise
        return


async def _tls_handshake(sock):
    """Waits until the handshake of TLS client `sock` (non-blocking, started by `wrap_socket`)
    has finished, and raises its error (e.g. ENOKEY). Reads drive it; MSG_PEEK leaves any
    plaintext that came with it for the stream."""
    while sock.getpeercert(True) is None:
        await _io_wait(sock, _POLLIN)
        try:
            sock.recv(1, usocket.MSG_PEEK)
        except OSError as e:
            if e.errno == _EAGAIN:
                continue
            raise
        return  # plaintext or the end of the stream: the handshake is over


async def open_connection(host, port, ssl=None, server_hostname=None):
    """Connects to (host, port) over TCP; returns (reader, writer), one `Stream` twice.

    The name is looked up with `getaddrinfo` (which blocks); each address is tried in turn and
    the first address's error is raised if none connects.

    `ssl`: an `SSLContext` (of `tls` or `ssl`), or True for `tls.SSLContext(PROTOCOL_TLS_CLIENT)`
    (which verifies the server with the host's trust roots): the connection then runs TLS,
    verified against `server_hostname` (default: `host`), and the handshake finishes before
    this returns (its error, e.g. ENOKEY or EKEYREJECTED, is raised here).
    """
    if ssl is True:
        import tls

        ssl = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    if ssl and not server_hostname:
        server_hostname = host
    infos = usocket.getaddrinfo(host, port, 0, usocket.SOCK_STREAM)
    error = None
    for ai in infos:
        sock = usocket.socket(ai[0], ai[1], ai[2])
        try:
            sock.setblocking(False)
            await _connect(sock, ai[-1])
            if ssl:
                plain = sock
                sock = ssl.wrap_socket(plain, server_hostname=server_hostname)
                _loop._forget(plain)
                await _tls_handshake(sock)
        except OSError as e:
            _close_socket(sock)
            if error is None:
                error = e
            continue
        except BaseException:
            _close_socket(sock)
            raise
        s = Stream(sock, {"peername": ai[-1]})
        return s, s
    raise error if error is not None else OSError(-2)


class Server:
    """A listening socket and the task accepting its connections (made by `start_server`).

    Each connection gets its own task running the callback, so a slow, failed or reset client
    affects no other. An async context manager: leaving the block closes the server.
    """

    def __init__(self, sock, cb, ssl=None):
        self.s = sock
        self._closed = False
        self._ssl = ssl
        self.task = create_task(self._serve(cb))

    def close(self):
        """Stops accepting and closes the listening socket. Open connections stay open."""
        if self._closed:
            return
        self._closed = True
        self.task.cancel()
        _close_socket(self.s)

    async def wait_closed(self):
        """Waits until the server's task has ended (after `close`)."""
        await _join(self.task)

    async def serve_forever(self):
        """Waits until the server is closed (CPython's name)."""
        try:
            await _join(self.task)
        except CancelledError:
            self.close()
            raise

    def is_serving(self):
        return not self._closed

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, tb):
        self.close()
        await self.wait_closed()

    async def _serve(self, cb):
        s = self.s
        while not self._closed:
            await _io_wait(s, _POLLIN)
            for _ in range(_ACCEPT_BATCH):
                if self._closed:
                    return
                try:
                    conn, addr = s.accept()
                except OSError as e:
                    if e.errno == _EAGAIN or e.errno == _ECONNABORTED:
                        break
                    if self._closed:
                        return
                    # E.g. ENOMEM, out of sockets: the connection waits in the backlog.
                    await sleep_ms(_ACCEPT_RETRY_MS)
                    break
                try:
                    conn.setblocking(False)
                    if self._ssl:
                        # The handshake runs in the connection's first reads and writes.
                        conn = self._ssl.wrap_socket(
                            conn, server_side=True, do_handshake_on_connect=False
                        )
                except OSError:
                    conn.close()
                    continue
                stream = Stream(conn, {"peername": addr})
                create_task(_client(cb, stream))


async def _client(cb, stream):
    """Runs a server's callback for one connection; if it fails, the connection is closed."""
    try:
        r = cb(stream, stream)
        if r is not None and (hasattr(r, "send") or hasattr(r, "__await__")):
            await r
    except BaseException:
        stream._out = bytearray()
        stream.close()
        raise


async def start_server(cb, host, port, backlog=5, ssl=None):
    """Listens on (host, port) (host "" or None: every IPv4 address) and calls
    `cb(reader, writer)` for each connection (a coroutine function or a plain one).
    Returns the `Server`.

    `ssl`: a server `SSLContext` (with `load_cert_chain`): each connection runs TLS; its
    handshake happens in the connection's first reads and writes (a failed one raises there,
    in `cb`)."""
    if ssl and not hasattr(ssl, "wrap_socket"):
        raise TypeError("ssl must be an SSLContext")
    if not host:
        host = "0.0.0.0"
    ai = usocket.getaddrinfo(host, port, 0, usocket.SOCK_STREAM)[0]
    sock = usocket.socket(ai[0], ai[1], ai[2])
    try:
        sock.setsockopt(usocket.SOL_SOCKET, usocket.SO_REUSEADDR, 1)
        sock.bind(ai[-1])
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return Server(sock, cb, ssl or None)
