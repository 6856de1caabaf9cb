"""MicroPython's ``utime`` (``time``) over CPython's ``time``.

``ticks_ms``/``ticks_us``/``ticks_cpu`` count from an arbitrary point on the monotonic clock
and wrap at ``TICKS_PERIOD`` (2**30, as on MicroPython's boards): compare them only with
``ticks_diff`` and move them only with ``ticks_add``. ``sleep`` takes seconds (int or float),
``sleep_ms``/``sleep_us`` integers; a negative delay does not sleep. ``time()`` and
``time_ns()`` are CPython's (``time()`` is a float, as on MicroPython's unix port).

``micropython_env`` also adds these functions to CPython's ``time`` module.
"""

import time as _time

TICKS_PERIOD = 1 << 30
_TICKS_MAX = TICKS_PERIOD - 1
_TICKS_HALF = TICKS_PERIOD // 2

time = _time.time
time_ns = _time.time_ns
localtime = _time.localtime
gmtime = _time.gmtime
mktime = _time.mktime

_monotonic_ns = _time.monotonic_ns
_sleep = _time.sleep


def ticks_ms():
    """Milliseconds on the monotonic clock, modulo TICKS_PERIOD."""
    return (_monotonic_ns() // 1000000) & _TICKS_MAX


def ticks_us():
    """Microseconds on the monotonic clock, modulo TICKS_PERIOD."""
    return (_monotonic_ns() // 1000) & _TICKS_MAX


ticks_cpu = ticks_us


def ticks_diff(ticks1, ticks2):
    """The signed distance ticks1 - ticks2, for ticks less than TICKS_PERIOD / 2 apart."""
    return ((ticks1 - ticks2 + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF


def ticks_add(ticks, delta):
    """ticks moved by delta (either sign), modulo TICKS_PERIOD."""
    return (ticks + delta) & _TICKS_MAX


def sleep(seconds):
    """Sleeps `seconds` (an int or a float); a negative delay returns at once."""
    if seconds > 0:
        _sleep(seconds)


def sleep_ms(ms):
    """Sleeps `ms` milliseconds; a negative delay returns at once."""
    if ms > 0:
        _sleep(ms / 1000)


def sleep_us(us):
    """Sleeps `us` microseconds; a negative delay returns at once."""
    if us > 0:
        _sleep(us / 1000000)
