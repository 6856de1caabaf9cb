# conversions: each argument conversion of the Python guest library (the table at the top of
# guest-python/lib/usocket.py): a wrong type or an out-of-range value raises OSError with the
# table's errno and never traps the guest; values the table saturates or converts work.
# Loopback only, ephemeral ports; needs connect,bind,listen,accept,send,recv on 127.0.0.1.
# Reaching the last line ("done") shows that no call trapped the component.
import array
import struct

import usocket as socket
import uselect as select
import uerrno as errno


def E(f):
    try:
        return ("ok", f())
    except OSError as e:
        if e.args != (e.errno,) or type(e) is not OSError or e.__context__ is not None:
            return ("badly shaped OSError", e.args, type(e).__name__)
        return ("OSError", e.errno)
    except Exception as e:
        return (type(e).__name__, None)


def T(name, f):
    print(name, E(f))


# The shape of the errors: MicroPython's OSError(n), no chained context.
try:
    socket.socket().recv(1)
except OSError as e:
    print("shape", repr(e), e.errno, e.args, str(e), type(e) is OSError)
    print("no chain", e.__context__ is None, e.__cause__ is None)

# A listener, a client and the accepted socket, on an ephemeral port.
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen()
addr = l.getsockname()
c = socket.socket()
T("connect list address", lambda: c.connect([addr[0], addr[1]]))
s, _ = l.accept()

# socket(af, type, proto)
T("socket af str", lambda: socket.socket("2"))
T("socket af float", lambda: socket.socket(2.0))
T("socket af 2**31", lambda: socket.socket(2**31))
T("socket af -2**31-1", lambda: socket.socket(-(2**31) - 1))
T("socket af 12345", lambda: socket.socket(12345))
T("socket type 2**31", lambda: socket.socket(socket.AF_INET, 2**31))
T("socket type None", lambda: socket.socket(socket.AF_INET, None))
T("socket proto 2**40", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 2**40))
T("socket proto str", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, "6"))
T("socket type True", lambda: socket.socket(socket.AF_INET, True).close())

# addresses: (str, int) tuples or lists
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
T("address str", lambda: u.connect("127.0.0.1"))
T("address 1-tuple", lambda: u.connect(("127.0.0.1",)))
T("address 4-tuple", lambda: u.connect(("127.0.0.1", 9, 0, 0)))
T("address bytes host", lambda: u.connect((b"127.0.0.1", 9)))
T("address None host", lambda: u.connect((None, 9)))
T("address surrogate host", lambda: u.connect(("\ud800", 9)))
T("address str port", lambda: u.connect(("127.0.0.1", "9")))
T("address float port", lambda: u.connect(("127.0.0.1", 9.0)))
T("address port 2**31", lambda: u.connect(("127.0.0.1", 2**31)))
T("address port -2**31-1", lambda: u.connect(("127.0.0.1", -(2**31) - 1)))
T("address port 65536", lambda: u.connect(("127.0.0.1", 65536)))
T("bind bad address", lambda: u.bind(("127.0.0.1", "0")))
T("sendto bad address", lambda: u.sendto(b"x", ("127.0.0.1", None)))
T("sendto bad data", lambda: u.sendto(5, ("127.0.0.1", 9)))
u.close()

# data: buffers and str (UTF-8); anything else EINVAL
T("send bytearray", lambda: c.send(bytearray(b"ab")))
T("send memoryview", lambda: c.send(memoryview(b"cd")))
T("send strided memoryview", lambda: c.send(memoryview(b"e-f-")[::2]))
T("send array", lambda: c.send(array.array("B", b"gh")))
T("send str", lambda: c.send("\u00e9"))
T("sendall bytearray", lambda: c.sendall(bytearray(b"ij")))
T("write memoryview", lambda: c.write(memoryview(bytearray(b"kl\n"))))
T("send int", lambda: c.send(5))
T("send None", lambda: c.send(None))
T("send list", lambda: c.send([1, 2]))
T("send surrogate str", lambda: c.send("\ud800"))
T("sendall int", lambda: c.sendall(1))
T("write float", lambda: c.write(1.0))
T("received", lambda: s.read(14))

# recv / recvfrom sizes and flags
T("recv -1", lambda: s.recv(-1))
T("recv float", lambda: s.recv(1.0))
T("recv str", lambda: s.recv("1"))
T("recv None", lambda: s.recv(None))
T("recv flags 2**31", lambda: s.recv(1, 2**31))
T("recv flags str", lambda: s.recv(1, "x"))
T("recvfrom -1", lambda: s.recvfrom(-1))
T("recvfrom flags float", lambda: s.recvfrom(1, 0.0))
c.write(b"0123456789\n")
T("recv 2**40 (saturated)", lambda: s.recv(2**40, socket.MSG_PEEK)[:1])
T("recv True", lambda: s.recv(True))

# read(n): None or negative reads to the end; sizes saturate
T("read float", lambda: s.read(1.0))
T("read str", lambda: s.read("1"))
T("read 2", lambda: s.read(2))
T("read bool", lambda: s.read(True))

# readinto(buf[, nbytes])
T("readinto bytes", lambda: s.readinto(b"xx"))
T("readinto str", lambda: s.readinto("xx"))
T("readinto int", lambda: s.readinto(4))
T("readinto read-only memoryview", lambda: s.readinto(memoryview(b"xx")))
T("readinto strided memoryview", lambda: s.readinto(memoryview(bytearray(8))[::2]))
T("readinto nbytes -1", lambda: s.readinto(bytearray(4), -1))
T("readinto nbytes float", lambda: s.readinto(bytearray(4), 1.0))
a = array.array("B", b"\0\0")
T("readinto array", lambda: (s.readinto(a), bytes(a)))
b = bytearray(3)
T("readinto nbytes 2**40 (clamped)", lambda: (s.readinto(b, 2**40), bytes(b)))

# readline(limit): None or negative: no limit; sizes saturate
T("readline float", lambda: s.readline(1.0))
T("readline str", lambda: s.readline("1"))
T("readline 2**40 (saturated)", lambda: s.readline(2**40))
c.write(b"line one\nline two\n")
T("readline -1 (no limit)", lambda: s.readline(-1))
T("readline None", lambda: s.readline(None))

# listen(backlog): ints saturate (the host clamps); other types EINVAL
for backlog in (2**31, -(2**40), True):
    k = socket.socket()
    k.bind(("127.0.0.1", 0))
    T("listen %r" % (backlog,), lambda: k.listen(backlog))
    k.close()
k = socket.socket()
T("listen str", lambda: k.listen("1"))
T("listen float", lambda: k.listen(1.5))
k.close()

# settimeout(t) / setblocking(flag)
T("settimeout str", lambda: s.settimeout("1"))
T("settimeout bytes", lambda: s.settimeout(b"1"))
T("settimeout list", lambda: s.settimeout([]))
T("settimeout -1", lambda: s.settimeout(-1))
T("settimeout nan", lambda: s.settimeout(float("nan")))
T("settimeout -10**400", lambda: s.settimeout(-(10**400)))
T("settimeout 10**400 (blocking)", lambda: s.settimeout(10**400))
T("settimeout True", lambda: s.settimeout(True))
T("setblocking '' (false)", lambda: s.setblocking(""))
T("non-blocking recv", lambda: s.recv(1))
T("setblocking [1] (true)", lambda: s.setblocking([1]))

# setsockopt(level, opt, value)
SOL, REUSE = socket.SOL_SOCKET, socket.SO_REUSEADDR
T("setsockopt level str", lambda: c.setsockopt("1", REUSE, 1))
T("setsockopt level 2**31", lambda: c.setsockopt(2**31, REUSE, 1))
T("setsockopt opt 2**40", lambda: c.setsockopt(SOL, 2**40, 1))
T("setsockopt opt float", lambda: c.setsockopt(SOL, 2.0, 1))
T("setsockopt value None", lambda: c.setsockopt(SOL, REUSE, None))
T("setsockopt value float", lambda: c.setsockopt(SOL, REUSE, 1.0))
T("setsockopt value list", lambda: c.setsockopt(SOL, REUSE, [1]))
T("setsockopt value 2**31", lambda: c.setsockopt(SOL, REUSE, 2**31))
T("setsockopt value surrogate", lambda: c.setsockopt(SOL, REUSE, "\ud800"))
T("setsockopt value True", lambda: c.setsockopt(SOL, REUSE, True))
T("setsockopt value bytearray", lambda: c.setsockopt(SOL, REUSE, bytearray(b"\1\0\0\0")))
T("setsockopt value memoryview", lambda: c.setsockopt(SOL, REUSE, memoryview(b"\1\0\0\0")))
T("setsockopt SO_RCVBUF 2**40", lambda: c.setsockopt(SOL, socket.SO_RCVBUF, 2**40))
T("setsockopt SO_SNDBUF -2**40", lambda: c.setsockopt(SOL, socket.SO_SNDBUF, -(2**40)))
T("setsockopt SO_LINGER struct", lambda: c.setsockopt(SOL, socket.SO_LINGER, struct.pack("ii", 1, 5)))
T("setsockopt SO_LINGER int", lambda: c.setsockopt(SOL, socket.SO_LINGER, 1))
T("setsockopt TCP_NODELAY bytes", lambda: c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, b"\1"))

# makefile(mode, buffering)
T("makefile r", lambda: c.makefile("r"))
T("makefile bytes mode", lambda: c.makefile(b"rb"))
T("makefile None mode", lambda: c.makefile(None))
T("makefile rwb None", lambda: type(c.makefile("rwb", None)).__name__)

# getaddrinfo(host, port, af, type, proto, flags)
gai = socket.getaddrinfo
T("getaddrinfo bytes host", lambda: gai(b"127.0.0.1", 80))
T("getaddrinfo None host", lambda: gai(None, 80))
T("getaddrinfo surrogate host", lambda: gai("\ud800", 80))
T("getaddrinfo str port", lambda: gai("127.0.0.1", "80"))
T("getaddrinfo float port", lambda: gai("127.0.0.1", 80.0))
T("getaddrinfo port 2**31", lambda: gai("127.0.0.1", 2**31))
T("getaddrinfo port 65536", lambda: gai("127.0.0.1", 65536))
T("getaddrinfo port True", lambda: gai("127.0.0.1", True))
T("getaddrinfo af 2**31", lambda: gai("127.0.0.1", 80, 2**31))
T("getaddrinfo af str", lambda: gai("127.0.0.1", 80, "2"))
T("getaddrinfo af 12345", lambda: gai("127.0.0.1", 80, 12345))
T("getaddrinfo type 2**31", lambda: gai("127.0.0.1", 80, 0, 2**31))
T("getaddrinfo proto 2**31", lambda: gai("127.0.0.1", 80, 0, 0, 2**31))
T("getaddrinfo flags str", lambda: gai("127.0.0.1", 80, 0, 0, 0, "0"))
T("getaddrinfo flags 2**40", lambda: gai("127.0.0.1", 80, 0, 0, 0, 2**40))

# uselect: registered objects, masks, timeouts
p = select.poll()
f = s.makefile("rwb")
T("register str", lambda: p.register("s"))
T("register int", lambda: p.register(5))
T("register mask -1", lambda: p.register(c, -1))
T("register mask 2**32", lambda: p.register(c, 2**32))
T("register mask str", lambda: p.register(c, "1"))
T("register mask 2**32-1", lambda: p.register(c, 2**32 - 1))
T("register file", lambda: p.register(f, select.POLLOUT))
T("modify mask -1", lambda: p.modify(c, -1))
T("modify unregistered", lambda: p.modify(s, select.POLLIN))
T("poll str", lambda: p.poll("1"))
T("poll nan", lambda: p.poll(float("nan")))
T("poll 2**40", lambda: [(o is f, r) for o, r in p.poll(2**40) if o is f])
T("poll -2**40", lambda: [(o is f, r) for o, r in p.poll(-(2**40)) if o is f])
T("poll 0.5", lambda: [(o is f, r) for o, r in p.poll(0.5) if o is f])
T("poll None", lambda: [(o is f, r) for o, r in p.poll(None) if o is f])
T("ipoll flags str", lambda: p.ipoll(0, "1"))
T("ipoll timeout list", lambda: p.ipoll([]))
T("select timeout str", lambda: select.select([s], [], [], "1"))
T("select timeout -1", lambda: select.select([s], [], [], -1))
T("select timeout nan", lambda: select.select([s], [], [], float("nan")))
T("select timeout 10**400", lambda: select.select([], [c], [], 10**400)[1] == [c])
T("select object", lambda: select.select([1], [], [], 0))

# errno names
print("uerrno", len(errno.errorcode), errno.errorcode[errno.EINVAL], errno.errorcode[-2])

c.close(); s.close(); l.close()
print("done")
