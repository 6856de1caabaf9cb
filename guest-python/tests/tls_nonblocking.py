# tls_nonblocking: TLS on non-blocking sockets driven by uselect.poll, and handshakes under a
# timeout (cli/tests/python_tls.rs).
#
#   tls_nonblocking.py ECHO SILENT
#
# ECHO: a native TLS server on 127.0.0.1 (certificate of the test CA /pki/ca.pem for
# localhost and 127.0.0.1) answering each chunk in upper case. SILENT: a TCP server that
# accepts and never sends a byte. Needs connect on 127.0.0.1:*, resolve=localhost. Stdout must
# equal tls_nonblocking.exp.
import sys

import usocket as socket
import uselect as select
import uerrno as errno
import utime as time
import tls

ECHO, SILENT = int(sys.argv[1]), int(sys.argv[2])
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cadata=open("/pki/ca.pem", "rb").read())
DEADLINE_MS = 10000


def exchange(t, data):
    """Writes `data` and reads its answer on non-blocking TLS socket `t`, waiting with poll
    only. While the handshake waits for the server, the socket may be writable yet take
    nothing (write gives None): then wait for the server's data (POLLIN) before writing
    again. Returns (answer, how many polls)."""
    p = select.poll()
    p.register(t, select.POLLOUT)
    sent, got, polls = 0, b"", 0
    start = time.ticks_ms()
    while not got.endswith(b"\n"):
        if time.ticks_diff(time.ticks_ms(), start) > DEADLINE_MS:
            return ("gave up", sent, got), polls
        polls += 1
        for obj, ev in p.poll(1000):
            if obj is not t:
                return ("poll returned another object", obj), polls
            if ev & (select.POLLERR | select.POLLHUP):
                return ("poll error", ev), polls
            if ev & select.POLLOUT and sent < len(data):
                n = t.write(data[sent:])
                if n:
                    sent += n
                p.modify(t, select.POLLIN if n is None or sent == len(data) else select.POLLOUT)
            elif ev & select.POLLIN:
                try:
                    chunk = t.recv(100)
                except OSError as e:
                    if e.errno != errno.EAGAIN:
                        raise
                    chunk = None
                if chunk:
                    got += chunk
                elif chunk == b"":
                    return ("end of stream", got), polls
                if sent < len(data):
                    p.modify(t, select.POLLOUT)
    return got, polls


# 1. Connected, then made non-blocking: wrap_socket returns at once (the handshake goes on in
# later calls, see 3).
s = socket.socket()
s.settimeout(10)
s.connect(("127.0.0.1", ECHO))
s.setblocking(False)
t = ctx.wrap_socket(s, server_hostname="localhost")
got, polls = exchange(t, b"non-blocking\n")
print(got, polls < 100, t.getpeercert(True) is not None)
t.close()

# 2. Wrapped while a non-blocking connect is still in progress: TLS starts once connected.
s = socket.socket()
s.setblocking(False)
try:
    s.connect(("127.0.0.1", ECHO))
except OSError as e:
    print("connect", errno.errorcode.get(e.errno))
t = ctx.wrap_socket(s, server_hostname="localhost")
got, polls = exchange(t, b"wrapped while connecting\n")
print(got)
t.close()

# 3. A non-blocking handshake that cannot progress: wrap_socket returns at once; nothing to
# read, nothing written.
s = socket.socket()
s.settimeout(10)
s.connect(("127.0.0.1", SILENT))
s.setblocking(False)
t = ctx.wrap_socket(s)
p = select.poll()
p.register(t, select.POLLIN)
print("stalled", t.getpeercert(True), p.poll(200), t.readline(), t.read(5), t.write(b"x"))
t.close()

# 4. Timed: the handshake must end within the socket's timeout, else ETIMEDOUT.
s = socket.socket()
s.settimeout(10)
s.connect(("127.0.0.1", SILENT))
s.settimeout(0.3)
start = time.ticks_ms()
try:
    ctx.wrap_socket(s, server_hostname="localhost")
    print("timed: handshake done?")
except OSError as e:
    took = time.ticks_diff(time.ticks_ms(), start)
    print("timed", e.errno, errno.errorcode.get(e.errno), 250 <= took < 5000)
s.close()

# 5. Deferred (do_handshake_on_connect=False), timed: the first read runs it and times out.
s = socket.socket()
s.settimeout(10)
s.connect(("127.0.0.1", SILENT))
t = ctx.wrap_socket(s, do_handshake_on_connect=False)
t.settimeout(0.2)
try:
    t.readline()
except OSError as e:
    print("deferred", e.errno)
t.close()

# 6. IPPROTO_SEC: connect's handshake within the timeout too.
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SEC)
s.settimeout(0.2)
try:
    s.connect(("127.0.0.1", SILENT))
except OSError as e:
    print("IPPROTO_SEC timed", e.errno)
s.close()
print("done")
