"""MicroPython's ``uselect`` (``select``): ``poll()`` objects, and ``select()``.

A poller holds registered objects (``usocket.socket`` objects, or the files their
``makefile`` returns), each with an event mask; ``poll``/``ipoll`` ask the host once for all
of them. Results are ``(obj, revents)`` with ``obj`` the registered object. POLLERR, POLLHUP
and 32 (a locally closed socket) are reported even when the mask does not ask for them.
Bytes that ``readline`` holds in its read-ahead count as POLLIN (and make ``poll`` not
wait). Argument conversions are in the table at the top of ``usocket``.
"""

import math as _math

import usocket as _usocket
from uerrno import EINVAL as _EINVAL, ENOENT as _ENOENT
from wit_world.imports import usocket as _wit

POLLIN = 1
POLLOUT = 4
POLLERR = 8
POLLHUP = 16
# A locally closed socket (MicroPython has no name for it).
_POLL_CLOSED = 32

_oserror = _usocket._oserror
_call = _usocket._call
_int = _usocket._int
_socket_of = _usocket._socket_of
_S32_MAX = (1 << 31) - 1
_U32_MAX = (1 << 32) - 1


def _mask(x):
    n = _int(x)
    if n is None or not 0 <= n <= _U32_MAX:
        raise _oserror(_EINVAL)
    return n


def _timeout_ms(x):
    """poll's timeout: None or negative: -1 (forever); ms as an int, floats rounded up."""
    if x is None:
        return -1
    if isinstance(x, float):
        if x != x:
            raise _oserror(_EINVAL)
        if x < 0:
            return -1
        if x >= _S32_MAX:
            return _S32_MAX
        return int(_math.ceil(x))
    n = _int(x)
    if n is None:
        raise _oserror(_EINVAL)
    if n < 0:
        return -1
    return _S32_MAX if n > _S32_MAX else n


class poll:
    """``uselect.poll()``: register objects and wait until some are ready."""

    __slots__ = ("_entries",)

    def __init__(self):
        # [registered object, its usocket.socket, mask], in registration order.
        self._entries = []

    def _find(self, obj):
        for entry in self._entries:
            if entry[0] is obj:
                return entry
        return None

    def register(self, obj, eventmask=POLLIN | POLLOUT):
        """Adds `obj` (a socket or a file from makefile), or replaces its mask."""
        sock = _socket_of(obj)
        if sock is None:
            raise _oserror(_EINVAL)
        mask = _mask(eventmask)
        entry = self._find(obj)
        if entry is None:
            self._entries.append([obj, sock, mask])
        else:
            entry[2] = mask

    def modify(self, obj, eventmask):
        """Changes the mask of a registered object; ENOENT if it is not registered."""
        mask = _mask(eventmask)
        entry = self._find(obj)
        if entry is None:
            raise _oserror(_ENOENT)
        entry[2] = mask

    def unregister(self, obj):
        """Removes `obj`; does nothing if it is not registered."""
        entries = self._entries
        for i in range(len(entries)):
            if entries[i][0] is obj:
                del entries[i]
                return

    def poll(self, timeout=-1):
        """``[(obj, revents), ...]`` for the ready objects, ``[]`` when `timeout` ms pass
        (None or negative: wait forever; 0: do not wait)."""
        ms = _timeout_ms(timeout)
        entries = self._entries
        held = None
        for i in range(len(entries)):
            entry = entries[i]
            if entry[2] & POLLIN and entry[1]._ahead is not None and entry[1]._ahead_len():
                if held is None:
                    held = set()
                held.add(i)
        if held is not None:
            # Readable already: only ask the host for what else is ready now.
            ms = 0
        revents = _call(_wit.poll, [(entry[1]._s, entry[2]) for entry in entries], ms)
        ready = []
        for i in range(len(entries)):
            r = revents[i]
            if held is not None and i in held:
                r |= POLLIN
            if r:
                ready.append((entries[i][0], r))
        return ready

    def ipoll(self, timeout=-1, flags=0):
        """As ``poll``, as an iterator. ``flags & 1`` (one-shot): each reported object's
        mask becomes 0 until ``modify`` (POLLERR, POLLHUP and 32 are still reported)."""
        oneshot = _int(flags)
        if oneshot is None:
            raise _oserror(_EINVAL)
        ready = self.poll(timeout)
        if oneshot & 1:
            for obj, _ in ready:
                entry = self._find(obj)
                if entry is not None:
                    entry[2] = 0
        return iter(ready)


def select(rlist, wlist, xlist, timeout=None):
    """``select(rlist, wlist, xlist[, timeout])`` over ``poll``: timeout in seconds (None:
    forever). An object is readable on POLLIN, POLLERR, POLLHUP or a local close, writable on
    POLLOUT or POLLERR; ``xlist`` never reports anything (there is no urgent data)."""
    if timeout is None:
        ms = -1
    else:
        if isinstance(timeout, float):
            seconds = timeout
        else:
            seconds = _int(timeout)
        if seconds is None or seconds != seconds or seconds < 0:
            raise _oserror(_EINVAL)
        ms = _timeout_ms(seconds * 1000.0) if seconds * 1000 < _S32_MAX else _S32_MAX
    p = poll()
    masks = {}
    for obj in rlist:
        masks[id(obj)] = [obj, masks.get(id(obj), [obj, 0])[1] | POLLIN]
    for obj in wlist:
        masks[id(obj)] = [obj, masks.get(id(obj), [obj, 0])[1] | POLLOUT]
    for obj in xlist:
        masks.setdefault(id(obj), [obj, 0])
    for obj, mask in masks.values():
        p.register(obj, mask)
    readable, writable = [], []
    for obj, r in p.poll(ms):
        if r & (POLLIN | POLLERR | POLLHUP | _POLL_CLOSED) and any(o is obj for o in rlist):
            readable.append(obj)
        if r & (POLLOUT | POLLERR) and any(o is obj for o in wlist):
            writable.append(obj)
    return readable, writable, []
