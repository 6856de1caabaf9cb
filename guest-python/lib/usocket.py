"""MicroPython's ``usocket`` (``socket``) for Python guests of the usocket host.

A thin layer over the host's WIT interface ``usocket:net/usocket`` (``wit/usocket.wit``) with
MicroPython's names, arguments and results; the behaviour contract is ``docs/contract.md``
(binding: ``shared/spec/SEMANTICS.md``). The host does the work (validation, policy,
buffering, blocking, deadlines); this module checks and converts each argument, makes one
host call per method and turns the host's errno into ``OSError``. Like the Rust guest library
(``guest/src/socket.rs``) it keeps one read-ahead for ``readline`` (see ``socket.readline``).

Errors
------
Every failure is a plain ``OSError(n)`` with ``e.errno == n`` and ``e.args == (n,)``, ``n``
being the contract's (Linux) number, or a negative ``EAI_*`` code from ``getaddrinfo``;
``str(e)`` is MicroPython's ``[Errno 110] ETIMEDOUT``. It is built as ``OSError(n)`` (one
argument, so CPython does not map it to a subclass such as ``BlockingIOError`` by *its* WASI
numbering) and raised outside any ``except`` block, so it has no ``__context__`` or
``__cause__`` (the bindings' own error object never shows in a traceback).

Argument conversions
--------------------
A value that does not fit its WIT type would trap the whole guest inside the bindings, so
every argument is checked and converted here, before the host call. "int" means an ``int``
(``bool`` included, being one) or an object with ``__index__``; "buffer" means ``bytes``,
``bytearray``, ``memoryview``, ``array.array`` or anything with the buffer protocol (copied
in C order), and also ``str`` (its UTF-8 bytes), as MicroPython's ``str`` is a read buffer.

====================================  ===========================================  ================================
argument                              accepted, and how it is converted             anything else
====================================  ===========================================  ================================
socket(af)                            int in s32                                   not an int: EINVAL;
                                                                                   outside s32: EAFNOSUPPORT
socket(type), socket(proto)           int in s32                                   EINVAL
address (bind, connect, sendto)       tuple or list (host, port): host a str       EINVAL
                                      (UTF-8 encodable), port an int in s32
                                      (the host then wants a literal and 0-65535)
data (send, sendall, write, sendto)   buffer -> bytes                              EINVAL
recv(n), recvfrom(n)                  int >= 0; above 2**32-1 saturates            EINVAL
recv/recvfrom flags                   int in s32                                   EINVAL
read(n)                               None or negative: until end of stream;       EINVAL
                                      int >= 0, above 2**32-1 saturates
readinto(buf[, nbytes])               buf a writable C-contiguous buffer           EINVAL
                                      (bytearray, writable memoryview, array);
                                      nbytes None or int >= 0, at most len(buf)
readline(limit)                       None or negative: no limit; int >= 0,        EINVAL
                                      above 2**32-1 saturates
listen(backlog)                       None: 128; int, saturated to s32 (the host   EINVAL
                                      counts negative as 0 and clamps large ones)
settimeout(t)                         None; int or float (the host answers EINVAL  EINVAL
                                      for negative and NaN); an int too large
                                      for a float is +inf (blocking)
setblocking(flag)                     any object, by its truth value               --
setsockopt(level, opt, value)         level, opt: int in s32                       not an int: EINVAL;
                                                                                   outside s32: ENOPROTOOPT
setsockopt value                      int in s32 -> int (SO_RCVBUF, SO_SNDBUF:     EINVAL
                                      saturated to s32, the host clamps them);
                                      buffer -> bytes (SO_LINGER:
                                      struct.pack("ii", onoff, seconds))
makefile(mode, buffering)             mode "rb", "wb", "rwb"; buffering ignored    EINVAL
getaddrinfo(host, port)               host a str (UTF-8 encodable); port an int    EINVAL
                                      in s32 (the host: 0-65535)
getaddrinfo(af)                       int in s32                                   not an int: EINVAL;
                                                                                   outside s32: -6 (EAI_FAMILY)
getaddrinfo(type, proto)              int in s32                                   EINVAL
getaddrinfo(flags)                    int, saturated to s32 (ignored by the host)  EINVAL
uselect: register(obj), select lists  a usocket.socket, a file from makefile, or   EINVAL
                                      a tls.SSLSocket
uselect: event masks                  int in 0..2**32-1                            EINVAL
uselect: poll/ipoll timeout (ms)      None or negative: forever; int; float        EINVAL (NaN, other types)
                                      rounded up; saturated at 2**31-1
uselect: ipoll flags                  int                                          EINVAL
uselect: select timeout (seconds)     None: forever; int or float >= 0             EINVAL
====================================  ===========================================  ================================

Checks come before the host call, so an argument error is reported even on a closed socket
(EINVAL rather than EBADF).
"""

from componentize_py_types import Err as _Err
from wit_world.imports import usocket as _wit

from uerrno import (
    EAFNOSUPPORT as _EAFNOSUPPORT,
    EAGAIN as _EAGAIN,
    EAI_FAMILY as _EAI_FAMILY,
    EINVAL as _EINVAL,
    ENOPROTOOPT as _ENOPROTOOPT,
    errorcode as _errorcode,
)

AF_INET = 2
AF_INET6 = 10
SOCK_STREAM = 1
SOCK_DGRAM = 2
IPPROTO_IP = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
# MicroPython's TLS stream socket (SOCK_STREAM only): connect also runs a verifying TLS client
# handshake, with the host's trust roots (see the `tls` module for more control).
IPPROTO_SEC = 100
SOL_SOCKET = 1
SO_REUSEADDR = 2
SO_BROADCAST = 6
SO_SNDBUF = 7
SO_RCVBUF = 8
SO_KEEPALIVE = 9
SO_LINGER = 13
TCP_NODELAY = 1
MSG_PEEK = 2
MSG_DONTWAIT = 64

# MicroPython's default `listen()` backlog.
_DEFAULT_BACKLOG = 128
# How much `readline` asks the host to hand over beyond the line, per host call.
_READ_AHEAD = 64 * 1024

_S32_MIN = -(1 << 31)
_S32_MAX = (1 << 31) - 1
_U32_MAX = (1 << 32) - 1

_Sockaddr = _wit.Sockaddr
_OptInt = _wit.SockoptValue_Int
_OptBytes = _wit.SockoptValue_Bytes


# ---- errors --------------------------------------------------------------------------------


def _oserror(n):
    """MicroPython's OSError(n): e.errno == n, e.args == (n,), str(e) '[Errno n] NAME'."""
    e = OSError(n)
    e.errno = n
    name = _errorcode.get(n)
    if name is not None:
        e.strerror = name
    return e


def _call(f, *args):
    """f(*args), a binding; its Err(errno) becomes OSError(errno), raised with no context."""
    try:
        return f(*args)
    except _Err as e:
        n = e.value
    raise _oserror(n)


# ---- argument conversions (see the table above) --------------------------------------------


def _int(x):
    """x as an exact int, or None if it is not an integer."""
    if type(x) is int:
        return x
    if isinstance(x, int):
        return int(x)
    index = getattr(type(x), "__index__", None)
    if index is None:
        return None
    try:
        n = index(x)
    except Exception:
        return None
    return int(n) if isinstance(n, int) else None


def _s32(x, err=_EINVAL, out_of_range=None):
    """x as an int in s32; `err` if not an int, `out_of_range` (default: err) if outside."""
    n = _int(x)
    if n is None:
        raise _oserror(err)
    if _S32_MIN <= n <= _S32_MAX:
        return n
    raise _oserror(err if out_of_range is None else out_of_range)


def _s32_saturated(x):
    """x as an int, saturated to s32; EINVAL if not an int."""
    n = _int(x)
    if n is None:
        raise _oserror(_EINVAL)
    return _S32_MIN if n < _S32_MIN else _S32_MAX if n > _S32_MAX else n


def _size(x):
    """A byte count: an int >= 0, saturated to u32; EINVAL otherwise."""
    n = _int(x)
    if n is None or n < 0:
        raise _oserror(_EINVAL)
    return _U32_MAX if n > _U32_MAX else n


def _optional_size(x):
    """None or a negative int: None (no size); an int >= 0: saturated to u32."""
    if x is None:
        return None
    n = _int(x)
    if n is None:
        raise _oserror(_EINVAL)
    if n < 0:
        return None
    return _U32_MAX if n > _U32_MAX else n


def _str(x):
    """x as an exact str that encodes to UTF-8 (a WIT string), or None."""
    if not isinstance(x, str):
        return None
    if type(x) is not str:
        x = str.__str__(x)
    if not x.isascii():
        try:
            x.encode("utf-8")
        except UnicodeError:
            return None
    return x


def _view(obj):
    """A memoryview of buffer `obj`; OSError(EINVAL) (raised outside any ``except``) if it is
    not a buffer."""
    try:
        view = memoryview(obj)
    except TypeError:
        view = None
    if view is None:
        raise _oserror(_EINVAL)
    return view


def _buffer(data):
    """A read buffer as bytes (a WIT list<u8>); EINVAL for anything else."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        encoded = _str(data)
        if encoded is None:
            raise _oserror(_EINVAL)
        return encoded.encode("utf-8")
    with _view(data) as view:
        return view.tobytes()


def _address(addr):
    """An (address, port) tuple or list as a WIT sockaddr; EINVAL for anything else."""
    if not isinstance(addr, (tuple, list)) or len(addr) != 2:
        raise _oserror(_EINVAL)
    host = _str(addr[0])
    if host is None:
        raise _oserror(_EINVAL)
    return _Sockaddr(host, _s32(addr[1]))


def _timeout(t):
    """settimeout's argument as option<f64>; EINVAL if not None, an int or a float."""
    if t is None:
        return None
    if isinstance(t, float):
        return float(t)
    n = _int(t)
    if n is None:
        raise _oserror(_EINVAL)
    try:
        return float(n)
    except OverflowError:
        return float("inf") if n > 0 else float("-inf")


def _sockaddr_tuple(sa):
    return (sa.address, sa.port)


# ---- sockets -------------------------------------------------------------------------------


class socket:
    """``socket(af=AF_INET, type=SOCK_STREAM, proto=0)``: MicroPython's socket object.

    Every method makes one call to the host (``readline``: at most one, see there) and raises
    ``OSError`` with the host's errno on failure. The socket is closed by ``close()``, by
    leaving a ``with`` block, or when the object is garbage collected.
    """

    __slots__ = ("_s", "_family", "_type", "_ahead", "_pos", "__weakref__")

    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        af = _s32(af, _EINVAL, _EAFNOSUPPORT)
        socktype = _s32(type)
        proto = _s32(proto)
        self._s = _call(_wit.Socket.create, af, socktype, proto)
        self._family = af
        self._type = socktype
        self._ahead = None
        self._pos = 0

    @classmethod
    def _wrap(cls, resource, family, socktype):
        self = cls.__new__(cls)
        self._s = resource
        self._family = family
        self._type = socktype
        self._ahead = None
        self._pos = 0
        return self

    def __repr__(self):
        return "<socket family=%d type=%d>" % (self._family, self._type)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def family(self):
        """The address family given at creation (CPython's ``sock.family``)."""
        return self._family

    @property
    def type(self):
        """The socket type given at creation (CPython's ``sock.type``)."""
        return self._type

    # -- readline's read-ahead --
    #
    # `readline` asks the host (readline-ahead) for the line plus up to _READ_AHEAD bytes
    # it had already received after it, and serves the next whole lines from those bytes
    # without a host call. Before any other receiving call, and before `close`, what is left
    # goes back to the host with `unread`, so the host's queue is again the whole stream:
    # other methods, poll and reset-on-close behave as if the host held the bytes all along.
    # Once readline has used all of them it says so at once (an empty `unread`), so a guest
    # that ends right after leaves no bytes "lent" (which would reset the connection).
    # `uselect` counts held bytes as POLLIN.

    def _give_back(self):
        """Returns the unused read-ahead to the host; on failure the bytes stay here."""
        ahead = self._ahead
        if ahead is not None:
            _call(self._s.unread, ahead[self._pos :] if self._pos else ahead)
            self._ahead = None
            self._pos = 0

    def _ahead_len(self):
        ahead = self._ahead
        return 0 if ahead is None else len(ahead) - self._pos

    def _take_line(self, limit):
        """The next line (with its newline), or `limit` bytes, if the read-ahead holds it."""
        ahead = self._ahead
        pos = self._pos
        end = len(ahead) if limit is None else min(len(ahead), pos + limit)
        i = ahead.find(b"\n", pos, end)
        if i >= 0:
            n = i + 1
        elif limit is not None and end - pos == limit:
            n = end
        else:
            return None
        self._pos = n
        return ahead[pos:n]

    # -- connections --

    def bind(self, addr):
        """``bind((address, port))``: ``""`` is the family's wildcard, port 0 any port."""
        _call(self._s.bind, _address(addr))

    def listen(self, backlog=None):
        """``listen([backlog])``: default 128; negative counts as 0; large ones are clamped."""
        backlog = _DEFAULT_BACKLOG if backlog is None else _s32_saturated(backlog)
        _call(self._s.listen, backlog)

    def accept(self):
        """``accept()``: ``(socket, (address, port))``, the new socket in this one's mode."""
        resource, sa = _call(self._s.accept)
        return socket._wrap(resource, self._family, SOCK_STREAM), (sa.address, sa.port)

    def connect(self, addr):
        """``connect((address, port))``: non-blocking: EINPROGRESS, EALREADY, EISCONN."""
        _call(self._s.connect, _address(addr))

    def close(self):
        """``close()``: idempotent; every later call fails with EBADF."""
        if self._ahead is not None:
            # Read-ahead goes back first, so that closing with it unread resets the
            # connection as closing with any unread data does.
            try:
                self._give_back()
            except OSError:
                pass
            self._ahead = None
            self._pos = 0
        self._s.close()

    # -- sending --

    def send(self, data):
        """``send(data)``: the count sent, 1..len (0 for empty data); may be short."""
        return _call(self._s.send, _buffer(data))

    def sendall(self, data):
        """``sendall(data)``: all of it or an error; non-blocking: EAGAIN if not all fit."""
        data = _buffer(data)
        if _call(self._s.write, data) < len(data):
            raise _oserror(_EAGAIN)

    def write(self, data):
        """``write(data)``: ``len(data)``; non-blocking: the count written, None if 0."""
        data = _buffer(data)
        n = _call(self._s.write, data)
        if n == 0 and data:
            return None
        return n

    def sendto(self, data, addr):
        """``sendto(data, (address, port))``: one datagram; returns its length."""
        data = _buffer(data)
        return _call(self._s.send_to, data, _address(addr))

    # -- receiving --

    def recv(self, bufsize, flags=0):
        """``recv(n[, flags])``: 1..n bytes as they come; ``b""`` at end of stream."""
        bufsize = _size(bufsize)
        flags = _s32(flags)
        if self._ahead is not None:
            self._give_back()
        return _call(self._s.recv, bufsize, flags)

    def recvfrom(self, bufsize, flags=0):
        """``recvfrom(n[, flags])``: ``(bytes, (address, port))``."""
        bufsize = _size(bufsize)
        flags = _s32(flags)
        if self._ahead is not None:
            self._give_back()
        data, sa = _call(self._s.recv_from, bufsize, flags)
        return data, (sa.address, sa.port)

    def read(self, size=None):
        """``read(n)``: exactly n bytes, fewer only at end of stream; ``read()``: to the end.

        Non-blocking: what is available now, None if nothing is."""
        size = _optional_size(size)
        if self._ahead is not None:
            self._give_back()
        return _call(self._s.read, size)

    def readinto(self, buf, nbytes=None):
        """``readinto(buf[, nbytes])``: fills buf (or its first nbytes) as ``read`` does and
        returns the count: 0 at end of stream, None if non-blocking and nothing is there."""
        with _view(buf) as view:
            if view.readonly or not view.c_contiguous:
                raise _oserror(_EINVAL)
            with view.cast("B") if view.format != "B" or view.ndim != 1 else view as target:
                n = len(target)
                if nbytes is not None:
                    limit = _int(nbytes)
                    if limit is None or limit < 0:
                        raise _oserror(_EINVAL)
                    n = min(n, limit)
                if self._ahead is not None:
                    self._give_back()
                data = _call(self._s.read, n)
                if data is None:
                    return None
                count = len(data)
                target[:count] = data
                return count

    def readline(self, limit=None):
        """``readline([limit])``: one line with its ``b"\\n"``; at end of stream the last
        partial line, then ``b""``; non-blocking: what is there, None if nothing.

        At most one host call, two when a partial line held here must first go back: the
        host hands over bytes it already received after the line, and the following whole
        lines are served from them."""
        limit = _optional_size(limit)
        if self._ahead is not None:
            line = self._take_line(limit)
            if line is not None:
                if self._pos == len(self._ahead):
                    # All of it used: tell the host now (an empty `unread`). On failure the
                    # empty read-ahead stays and the next receiving call tells it.
                    try:
                        self._give_back()
                    except OSError:
                        pass
                return line
            # Not a whole line here: the rest goes back and the host (which keeps the
            # deadline for the whole call) assembles the line.
            self._give_back()
        got = _call(self._s.readline_ahead, limit, _READ_AHEAD)
        if got is None:
            return None
        # One buffer: the line (its first `line_len` bytes), then what the host lent.
        data, n = got.bytes, got.line_len
        if n >= len(data):
            return data
        self._ahead = data
        self._pos = n
        return data[:n]

    # -- modes and options --

    def settimeout(self, value):
        """``settimeout(t)``: None blocks, 0 is non-blocking, t > 0 a deadline per call."""
        _call(self._s.set_timeout, _timeout(value))

    def setblocking(self, flag):
        """``setblocking(flag)``: exactly ``settimeout(None)`` or ``settimeout(0)``."""
        _call(self._s.set_timeout, None if flag else 0.0)

    def setsockopt(self, level, optname, value):
        """``setsockopt(level, opt, value)``: value an int or bytes (see the table above)."""
        level = _s32(level, _EINVAL, _ENOPROTOOPT)
        optname = _s32(optname, _EINVAL, _ENOPROTOOPT)
        if isinstance(value, (str, bytes, bytearray, memoryview)):
            opt = _OptBytes(_buffer(value))
        else:
            n = _int(value)
            if n is not None:
                if level == SOL_SOCKET and optname in (SO_RCVBUF, SO_SNDBUF):
                    n = _s32_saturated(n)
                elif not _S32_MIN <= n <= _S32_MAX:
                    raise _oserror(_EINVAL)
                opt = _OptInt(n)
            elif value is None:
                raise _oserror(_EINVAL)
            else:
                opt = _OptBytes(_buffer(value))
        _call(self._s.set_sockopt, level, optname, opt)

    def makefile(self, mode="rb", buffering=0):
        """``makefile(mode="rb", buffering=0)``: a file object over this socket (reads and
        writes on either are one stream; closing either closes the socket). Modes "rb",
        "wb", "rwb" (they do not restrict operations); any other: EINVAL."""
        if not isinstance(mode, str) or mode not in ("rb", "wb", "rwb"):
            raise _oserror(_EINVAL)
        _call(self._s.kind)
        return SocketFile(self)

    # -- addresses (not in MicroPython's usocket) --

    def getsockname(self):
        """The local ``(address, port)``, once bound (EINVAL before)."""
        return _sockaddr_tuple(_call(self._s.local_address))

    def getpeername(self):
        """The peer's ``(address, port)``, once connected (ENOTCONN before)."""
        return _sockaddr_tuple(_call(self._s.peer_address))


class _Wrapper:
    """An object over a ``usocket.socket`` (``_sock``) that ``uselect`` polls as that
    socket: a ``SocketFile``, or ``tls.SSLSocket``."""

    __slots__ = ("_sock",)


class SocketFile(_Wrapper):
    """The file object ``socket.makefile()`` returns: the same stream as its socket
    (unbuffered, as ``buffering=0``); closing it closes the socket."""

    __slots__ = ()

    def __init__(self, sock):
        self._sock = sock

    def __repr__(self):
        return "<SocketFile %r>" % (self._sock,)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._sock.close()

    def __iter__(self):
        return self

    def __next__(self):
        line = self._sock.readline()
        if not line:
            raise StopIteration
        return line

    def read(self, size=None):
        return self._sock.read(size)

    def readinto(self, buf, nbytes=None):
        return self._sock.readinto(buf, nbytes)

    def readline(self, limit=None):
        return self._sock.readline(limit)

    def write(self, data):
        return self._sock.write(data)

    def flush(self):
        pass

    def close(self):
        self._sock.close()

    @property
    def socket(self):
        """The socket this file reads and writes."""
        return self._sock


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    """``getaddrinfo(host, port, af=0, type=0, proto=0, flags=0)``: a list of
    ``(family, type, proto, "", (address, port))``; errors are negative EAI_* codes (and
    EINVAL for a port outside 0-65535)."""
    name = _str(host)
    if name is None:
        raise _oserror(_EINVAL)
    port = _s32(port)
    af = _s32(af, _EINVAL, _EAI_FAMILY)
    socktype = _s32(type)
    proto = _s32(proto)
    flags = _s32_saturated(flags)
    infos = _call(_wit.getaddrinfo, name, port, af, socktype, proto, flags)
    return [
        (i.family, i.socktype, i.proto, i.canonname, (i.sockaddr.address, i.sockaddr.port))
        for i in infos
    ]


def _socket_of(obj):
    """The usocket.socket behind a usocket.socket, a SocketFile or a tls.SSLSocket, or
    None."""
    if isinstance(obj, socket):
        return obj
    if isinstance(obj, _Wrapper):
        return obj._sock
    return None
