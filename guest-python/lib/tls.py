"""MicroPython's ``tls`` module (and, through ``ssl``, its older ``ssl`` API) for Python guests
of the usocket host: TLS on stream sockets, terminated in the host.

The host runs TLS (rustls) under the socket: ``wrap_socket`` asks it to start TLS on a
connected ``usocket.socket`` (WIT ``start-tls``), and from then on every stream call of that
socket carries plaintext through TLS with the usual blocking, timeout and error rules. The
objects here only check and convert arguments and keep the context's settings.

Names and values are MicroPython's (``extmod/modtls_mbedtls.c``, ``extmod/ssl/ssl.py``):
``PROTOCOL_TLS_CLIENT`` 0, ``PROTOCOL_TLS_SERVER`` 1, ``CERT_NONE`` 0, ``CERT_OPTIONAL`` 1,
``CERT_REQUIRED`` 2; a ``tls.SSLContext`` verifies by default as a client (``CERT_REQUIRED``)
and not as a server (``CERT_NONE``); ``ssl.SSLContext`` starts at ``CERT_NONE`` on both sides,
as MicroPython's ``ssl`` does.

Errors are ``OSError(n)`` as everywhere in the usocket modules: a certificate the client
does not trust is ENOKEY (126), expired EKEYEXPIRED (127), not valid for the name
EKEYREJECTED (129), malformed EBADMSG (74), a TLS protocol failure EPROTO (71); a handshake
past its timeout ETIMEDOUT; a ``server_hostname`` this guest is not granted EACCES;
certificates or keys the host cannot use EINVAL (reported by ``wrap_socket``, not by
``load_cert_chain``, which only keeps them).

Argument conversions (as in the table at the top of ``usocket``, checked before any host
call; "buffer" is bytes, bytearray, memoryview, array or any buffer, "int" an int or an object
with ``__index__``):

==========================================  ==========================================  ======
argument                                    accepted, and how it is converted            else
==========================================  ==========================================  ======
SSLContext(protocol)                        int 0 (client) or 1 (server)                 EINVAL
verify_mode, wrap_socket(cert_reqs)         int 0, 1 or 2 (CERT_*); a server context     EINVAL
                                            wraps only with CERT_NONE (EOPNOTSUPP: the
                                            host does not verify client certificates)
load_cert_chain(certfile, keyfile=None),    buffer: the PEM or DER data itself; str      EINVAL
wrap_socket(cert=, key=)                    with "-----BEGIN": PEM text; other str or
                                            os.PathLike: a file to read now (missing:
                                            ENOENT, not readable: EACCES, a NUL in the
                                            path: EINVAL, other: EIO)
load_verify_locations(cafile, cadata)       cafile as certfile above; cadata a buffer    EINVAL
                                            or str (PEM text); at least one of them;
                                            later calls add to the trusted CAs
wrap_socket(sock)                           a usocket.socket (stream, connected or       EINVAL
                                            connecting)
wrap_socket(server_side)                    truth value; True on a client context:       EINVAL
                                            EINVAL
wrap_socket(server_hostname)                None or str (UTF-8 encodable)                EINVAL
wrap_socket(do_handshake...)                truth value                                  --
getpeercert(binary_form)                    truth value; false: NotImplementedError      --
                                            (as MicroPython)
==========================================  ==========================================  ======
"""

import binascii as _binascii
import os as _os

from wit_world.imports import usocket as _wit

import usocket as _usocket
from uerrno import (
    EACCES as _EACCES,
    EINVAL as _EINVAL,
    EIO as _EIO,
    ENOENT as _ENOENT,
    EOPNOTSUPP as _EOPNOTSUPP,
)

PROTOCOL_TLS_CLIENT = 0
PROTOCOL_TLS_SERVER = 1
CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2

_oserror = _usocket._oserror
_call = _usocket._call
_int = _usocket._int
_str = _usocket._str

# At most this much of a certificate or key file is read: the host refuses more (EINVAL), so
# reading one byte beyond it is enough for that answer.
_MAX_FILE = 256 * 1024 + 1


# ---- argument conversions ------------------------------------------------------------------


def _choice(x, count):
    """x as an int in range(count); EINVAL otherwise."""
    n = _int(x)
    if n is None or not 0 <= n < count:
        raise _oserror(_EINVAL)
    return n


def _bytes(x):
    """A buffer as bytes, or None if `x` is not one (str excluded)."""
    if type(x) is bytes:
        return x
    if isinstance(x, str):
        return None
    try:
        view = memoryview(x)
    except TypeError:
        return None
    with view:
        return view.tobytes()


def _read_file(path):
    """The bytes of file `path` (up to _MAX_FILE); OSError(ENOENT/EACCES/EIO/EINVAL) with the
    contract's numbers (not CPython's WASI ones)."""
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_FILE)
    except FileNotFoundError:
        n = _ENOENT
    except PermissionError:
        n = _EACCES
    except ValueError:  # a NUL in the path
        n = _EINVAL
    except OSError:  # a directory, an I/O error
        n = _EIO
    raise _oserror(n)


def _pem_or_file(x):
    """Certificate/key data: a buffer as is; a str holding PEM text as UTF-8; any other str
    (or os.PathLike) names a file, read now. EINVAL for anything else."""
    data = _bytes(x)
    if data is not None:
        return data
    if isinstance(x, str):
        text = _str(x)
        if text is None:
            raise _oserror(_EINVAL)
        if "-----BEGIN" in text:
            return text.encode("utf-8")
        return _read_file(text)
    if isinstance(x, _os.PathLike):
        try:
            path = _os.fspath(x)
        except Exception:
            path = None
        if isinstance(path, str) and _str(path) is not None:
            return _read_file(path)
    raise _oserror(_EINVAL)


def _pem_text(x):
    """cadata: a buffer as is, a str as its UTF-8 bytes (PEM text); EINVAL otherwise."""
    data = _bytes(x)
    if data is not None:
        return data
    text = _str(x)
    if text is None:
        raise _oserror(_EINVAL)
    return text.encode("utf-8")


def _as_pem(data):
    """`data` as PEM: itself if it holds PEM blocks, else (DER) one CERTIFICATE block."""
    if b"-----BEGIN" in data:
        return data if data.endswith(b"\n") else data + b"\n"
    lines = [b"-----BEGIN CERTIFICATE-----\n"]
    for i in range(0, len(data), 48):
        lines.append(_binascii.b2a_base64(data[i : i + 48]))
    lines.append(b"-----END CERTIFICATE-----\n")
    return b"".join(lines)


def _hostname(x):
    if x is None:
        return None
    name = _str(x)
    if name is None:
        raise _oserror(_EINVAL)
    return name


# ---- contexts ------------------------------------------------------------------------------


class SSLContext:
    """``SSLContext(protocol)``: the settings of the TLS sockets it wraps.

    ``protocol`` is ``PROTOCOL_TLS_CLIENT`` or ``PROTOCOL_TLS_SERVER``. ``verify_mode``
    starts at ``CERT_REQUIRED`` for a client (the server's certificate must chain to a
    trusted CA, the host's roots unless ``load_verify_locations`` gave others, and be valid
    for the name) and ``CERT_NONE`` for a server.
    """

    __slots__ = ("_protocol", "_verify_mode", "_cert", "_key", "_cadata")

    def __init__(self, protocol):
        self._protocol = _choice(protocol, 2)
        self._verify_mode = CERT_NONE if self._protocol == PROTOCOL_TLS_SERVER else CERT_REQUIRED
        self._cert = None
        self._key = None
        self._cadata = None

    def __repr__(self):
        side = "server" if self._protocol == PROTOCOL_TLS_SERVER else "client"
        return "<SSLContext %s verify_mode=%d>" % (side, self._verify_mode)

    @property
    def protocol(self):
        return self._protocol

    @property
    def verify_mode(self):
        """``CERT_NONE`` (0), ``CERT_OPTIONAL`` (1) or ``CERT_REQUIRED`` (2). A client treats
        optional as required (a server always presents a certificate)."""
        return self._verify_mode

    @verify_mode.setter
    def verify_mode(self, value):
        self._verify_mode = _choice(value, 3)

    def load_cert_chain(self, certfile, keyfile=None):
        """The certificate chain (and its private key) this side presents: data (bytes, or
        PEM text) or files (paths), PEM or DER. Without ``keyfile`` the key is looked for in
        ``certfile``. Checked by the host when a socket is wrapped (EINVAL)."""
        cert = _pem_or_file(certfile)
        key = None if keyfile is None else _pem_or_file(keyfile)
        self._cert = cert
        self._key = key

    def load_verify_locations(self, cafile=None, cadata=None):
        """Adds CA certificates a client trusts instead of the host's roots: ``cafile`` (as
        ``certfile``: a path, or, as MicroPython's ``tls`` takes it, the data itself) and/or
        ``cadata`` (PEM or DER bytes, or PEM text)."""
        if cafile is None and cadata is None:
            raise _oserror(_EINVAL)
        blobs = []
        if cafile is not None:
            blobs.append(_pem_or_file(cafile))
        if cadata is not None:
            blobs.append(_pem_text(cadata))
        if self._cadata is not None:
            blobs.insert(0, self._cadata)
        if len(blobs) == 1:
            self._cadata = blobs[0]
        else:
            self._cadata = b"".join(_as_pem(b) for b in blobs)

    def wrap_socket(
        self, sock, server_side=False, do_handshake_on_connect=True, server_hostname=None
    ):
        """Starts TLS on `sock` (a connected ``usocket.socket``; a client's may still be
        connecting) and returns the ``SSLSocket`` to use from now on.

        The handshake runs now (``do_handshake_on_connect``) within the socket's timeout:
        blocking, to its end; timed, ETIMEDOUT if it takes longer; non-blocking, as far as it
        goes without waiting (later reads and writes finish it). Otherwise the first read or
        write runs it. A client verifies against ``server_hostname`` (sent as SNI), which must
        be a name this guest is granted; without one, the name the guest resolved the peer's
        address from, else the address.
        """
        if not isinstance(sock, _usocket.socket):
            raise _oserror(_EINVAL)
        server = self._protocol == PROTOCOL_TLS_SERVER
        if server_side and not server:
            raise _oserror(_EINVAL)
        name = _hostname(server_hostname)
        if server and self._verify_mode != CERT_NONE:
            raise _oserror(_EOPNOTSUPP)
        params = _wit.TlsParams(
            server_side=server,
            server_hostname=None if server else name,
            cert_reqs=CERT_NONE if server else self._verify_mode,
            cadata=None if server else self._cadata,
            cert=self._cert,
            key=self._key,
        )
        handshake = bool(do_handshake_on_connect)
        # Bytes `readline` holds go back first: the host's queue is the whole stream again.
        if sock._ahead is not None:
            sock._give_back()
        _call(sock._s.start_tls, params, handshake)
        return SSLSocket._wrap(sock)


def wrap_socket(
    sock,
    server_side=False,
    key=None,
    cert=None,
    cert_reqs=CERT_NONE,
    cadata=None,
    server_hostname=None,
    do_handshake=True,
):
    """MicroPython's ``ssl.wrap_socket``: a context for this one socket, then its
    ``wrap_socket``. ``cert_reqs`` defaults to ``CERT_NONE``: pass ``CERT_REQUIRED`` (and
    ``cadata`` for CAs other than the host's) to verify the server."""
    context = SSLContext(PROTOCOL_TLS_SERVER if server_side else PROTOCOL_TLS_CLIENT)
    if cert is not None or key is not None:
        if cert is None:
            raise _oserror(_EINVAL)
        context.load_cert_chain(cert, key)
    if cadata is not None:
        context.load_verify_locations(cadata=cadata)
    context.verify_mode = cert_reqs
    return context.wrap_socket(
        sock,
        server_side=server_side,
        do_handshake_on_connect=do_handshake,
        server_hostname=server_hostname,
    )


# ---- TLS sockets ---------------------------------------------------------------------------


class SSLSocket(_usocket._Wrapper):
    """A TLS stream over a ``usocket.socket`` (what ``wrap_socket`` returns).

    Its methods are the socket's, carrying plaintext: ``read readinto readline write send
    sendall recv setblocking settimeout close``, plus ``getpeercert``. ``uselect.poll`` and
    the ``asyncio`` streams take it as a socket. ``close`` sends TLS close_notify; a peer
    that ends the stream without one gives ECONNRESET once, then end of stream. (The wrapped
    socket is the same stream: it reads and writes plaintext too.)
    """

    __slots__ = ()

    @classmethod
    def _wrap(cls, sock):
        self = cls.__new__(cls)
        self._sock = sock
        return self

    def __repr__(self):
        return "<SSLSocket %r>" % (self._sock,)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._sock.close()

    def read(self, size=None):
        """``read(n)``: n bytes, fewer only at end of stream; ``read()``: to the end.
        Non-blocking: what is there, None if nothing is."""
        return self._sock.read(size)

    def readinto(self, buf, nbytes=None):
        return self._sock.readinto(buf, nbytes)

    def readline(self, limit=None):
        return self._sock.readline(limit)

    def recv(self, bufsize, flags=0):
        return self._sock.recv(bufsize, flags)

    def write(self, data):
        return self._sock.write(data)

    def send(self, data):
        return self._sock.send(data)

    def sendall(self, data):
        return self._sock.sendall(data)

    def setblocking(self, flag):
        self._sock.setblocking(flag)

    def settimeout(self, value):
        self._sock.settimeout(value)

    def close(self):
        """Sends close_notify and closes the socket; idempotent."""
        self._sock.close()

    def getpeercert(self, binary_form=False):
        """``getpeercert(True)``: the peer's certificate as DER bytes once the handshake has
        finished (None before, or from a client that sent none). Without ``binary_form``:
        NotImplementedError, as in MicroPython."""
        if not binary_form:
            raise NotImplementedError("getpeercert() needs binary_form=True")
        return _call(self._sock._s.peer_certificate)

    def getpeername(self):
        return self._sock.getpeername()

    def getsockname(self):
        return self._sock.getsockname()

    @property
    def socket(self):
        """The wrapped ``usocket.socket`` (not in MicroPython)."""
        return self._sock
