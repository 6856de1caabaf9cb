"""MicroPython's module names for Python guests: importing this module makes ``socket``,
``select`` and ``errno`` the usocket modules (``usocket``, ``uselect``, ``uerrno``, with
MicroPython's numbers and behaviour), ``asyncio`` the guest's ``uasyncio`` (when it is
built in) and ``ssl`` (and ``ussl``) the guest's ``ssl`` over ``tls``, and adds MicroPython's
extras (``ticks_ms``, ``ticks_diff``, ``sleep_ms``, ...) to CPython's own ``time`` module. The
``u``-prefixed names of the other MicroPython modules (``ustruct``, ``ujson``, ``ubinascii``,
...) are the CPython modules, where those are built in.

The runner and app components import it before the program runs, so a program may simply
``import socket``. It replaces entries of ``sys.modules`` only: a CPython module that imported
the originals keeps them (and CPython's own ``OSError``s carry WASI's errno numbers, not
these).
"""

import os
import sys
import time

import uerrno
import uselect
import usocket
import utime
import micropython

sys.modules["socket"] = usocket
sys.modules["select"] = uselect
sys.modules["errno"] = uerrno

for _name in (
    "ticks_ms",
    "ticks_us",
    "ticks_cpu",
    "ticks_diff",
    "ticks_add",
    "sleep_ms",
    "sleep_us",
):
    setattr(time, _name, getattr(utime, _name))

# MicroPython's u-names for CPython modules that are built in (only modules imported when the
# component is built exist when it runs).
for _u, _std in (
    ("ustruct", "struct"),
    ("ujson", "json"),
    ("ubinascii", "binascii"),
    ("uhashlib", "hashlib"),
    ("urandom", "random"),
    ("ure", "re"),
    ("uio", "io"),
    ("uos", "os"),
    ("usys", "sys"),
    ("ucollections", "collections"),
    ("uzlib", "zlib"),
    ("uheapq", "heapq"),
    ("uarray", "array"),
):
    if _u not in sys.modules:
        try:
            sys.modules[_u] = __import__(_std)
        except ImportError:
            pass


def _load_ssl():
    """This library's ``ssl`` (beside ``tls``): CPython's stdlib comes first on ``sys.path``
    and holds an ``ssl`` of its own (unusable here), so the file is loaded by its path."""
    import importlib.util

    path = os.path.join(os.path.dirname(tls.__file__), "ssl.py")
    spec = importlib.util.spec_from_file_location("ssl", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ssl"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["ssl"]
        raise
    return module


# MicroPython's TLS: `tls` (its current name) and `ssl`/`ussl` (the older one).
import tls

sys.modules["ussl"] = _load_ssl()

try:
    import uasyncio
except ImportError:
    uasyncio = None
if uasyncio is not None:
    sys.modules["asyncio"] = uasyncio

del _name, _u, _std
