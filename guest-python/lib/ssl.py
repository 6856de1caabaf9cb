"""MicroPython's ``ssl`` module (``ussl``): its older name for ``tls``, which implements it.

Everything is ``tls``'s (``wrap_socket``, ``SSLSocket``, the constants), except that an
``ssl.SSLContext`` starts with ``verify_mode = CERT_NONE`` on both sides, as MicroPython's
``extmod/ssl/ssl.py`` makes it (``tls.SSLContext`` verifies by default as a client): set
``verify_mode = CERT_REQUIRED`` to verify the server. ``wrap_socket`` defaults to
``cert_reqs=CERT_NONE`` in both modules, as in MicroPython.

The runner and app components install this module as ``ssl`` (and ``ussl``) in
``sys.modules`` (``micropython_env``): CPython's own ``ssl`` is not available to guests.
"""

import tls as _tls
from tls import (
    CERT_NONE,
    CERT_OPTIONAL,
    CERT_REQUIRED,
    PROTOCOL_TLS_CLIENT,
    PROTOCOL_TLS_SERVER,
    SSLSocket,
    wrap_socket,
)


class SSLContext(_tls.SSLContext):
    """``ssl.SSLContext(protocol)``: ``tls.SSLContext`` with ``verify_mode`` starting at
    ``CERT_NONE`` (MicroPython's ``ssl``)."""

    __slots__ = ()

    def __init__(self, protocol):
        _tls.SSLContext.__init__(self, protocol)
        self._verify_mode = CERT_NONE
