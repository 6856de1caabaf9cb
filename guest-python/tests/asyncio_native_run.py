"""Runs the asyncio test scripts natively, on the machine's CPython, and plays their peers.

Not a test script itself (it has no .exp). The guest library's `uasyncio.py` uses only
MicroPython's API, which CPython's `socket`, `select` and `time` mostly have; this file puts
small shims of them under the names `usocket`, `uselect` and `utime`, and `uasyncio` under
`asyncio`, then runs a script as the guest would:

    python3 asyncio_native_run.py run SCRIPT.py [ARGS...]

It also plays the native peers the scripts expect (the Rust tests do the same):

    python3 asyncio_native_run.py echo-server PORT
        a line echo server for asyncio_client.py (see that script); prints its port, serves
        until killed
    python3 asyncio_native_run.py drive-server PORT
        the client side for asyncio_echo_server.py; exits 0 when every check passed

    python3 asyncio_native_run.py check
        runs the four scripts natively with their peers (ports 9862, 9863) and compares
        their output with the .exp files; exits 0 when all match
"""

import os
import select
import socket
import struct
import sys
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(HERE), "lib")


def install_shims():
    usocket = types.ModuleType("usocket")
    for name in dir(socket):
        if name.isupper():
            setattr(usocket, name, getattr(socket, name))
    usocket.socket = socket.socket

    def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
        infos = socket.getaddrinfo(host, port, af, type, proto, flags)
        return [(f, t, p, "", a[:2]) for f, t, p, _, a in infos]

    usocket.getaddrinfo = getaddrinfo

    class poll:
        """select.poll answering with the registered objects, as MicroPython's does."""

        def __init__(self):
            self._p = select.poll()
            self._fd = {}  # id(obj) -> fd
            self._obj = {}  # fd -> obj

        def register(self, obj, mask=select.POLLIN | select.POLLOUT):
            fd = self._fd.get(id(obj))
            if fd is None:
                fd = obj.fileno()
                self._fd[id(obj)] = fd
                self._obj[fd] = obj
            self._p.register(fd, mask)

        def modify(self, obj, mask):
            self._p.modify(self._fd[id(obj)], mask)

        def unregister(self, obj):
            fd = self._fd.pop(id(obj), None)
            if fd is not None:
                del self._obj[fd]
                self._p.unregister(fd)

        def poll(self, timeout=-1):
            if timeout is None:
                timeout = -1
            return [(self._obj[fd], ev) for fd, ev in self._p.poll(timeout)]

    uselect = types.ModuleType("uselect")
    uselect.poll = poll
    for name in ("POLLIN", "POLLOUT", "POLLERR", "POLLHUP"):
        setattr(uselect, name, getattr(select, name))

    utime = types.ModuleType("utime")
    start = time.monotonic()
    period = 1 << 30

    def ticks_ms():
        # Starts near the wrap, so the loop's handling of it is exercised.
        return (int((time.monotonic() - start) * 1000) + period - 500) % period

    def ticks_diff(a, b):
        return ((a - b + period // 2) % period) - period // 2

    utime.ticks_ms = ticks_ms
    utime.ticks_diff = ticks_diff
    utime.ticks_add = lambda t, d: (t + d) % period
    utime.sleep_ms = lambda ms: time.sleep(ms / 1000)
    utime.sleep = time.sleep
    utime.time = time.time

    sys.modules.update(usocket=usocket, uselect=uselect, utime=utime)
    sys.path.insert(0, LIB)
    import uasyncio

    sys.modules["asyncio"] = uasyncio


def run(script, args):
    install_shims()
    sys.argv = [script] + args
    code = compile(open(script).read(), script, "exec")
    exec(code, {"__name__": "__main__", "__file__": script})


# ---------------------------------------------------------------------------------------------
# Native peers


def echo_server(port):
    """The peer of asyncio_client.py: echoes each line; on b"BYE\\n" echoes it and closes; on
    b"RESET\\n" resets the connection (SO_LINGER 0); b"SILENT\\n" gets no answer."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(16)
    print(ls.getsockname()[1], flush=True)

    def serve(c):
        f = c.makefile("rb")
        try:
            for line in f:
                if line == b"SILENT\n":
                    continue
                if line == b"RESET\n":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                c.sendall(line)
                if line == b"BYE\n":
                    break
        except OSError:
            pass
        f.close()
        c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def drive_server(port):
    """The peer of asyncio_echo_server.py (started with PORT; wait for its READY line):

    1. one client connects and resets at once (SO_LINGER 0, nothing sent);
    2. 4 clients connect together; 50 times, each sends one line, then each reads its echo
       (so the server must serve them at once); then each sends a 100000-byte line and
       reads it back; then each closes;
    3. one client sends half a line and closes;
    4. one client sends b"STOP\\n" and expects b"BYE\\n", then end of stream.
    """
    addr = ("127.0.0.1", port)
    r = socket.create_connection(addr, timeout=10)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.close()
    cs = [socket.create_connection(addr, timeout=10) for _ in range(4)]
    fs = [c.makefile("rb") for c in cs]
    for i in range(50):
        for k, c in enumerate(cs):
            c.sendall(b"client %d line %d\n" % (k, i))
        for k, f in enumerate(fs):
            assert f.readline() == b"client %d line %d\n" % (k, i), (k, i)
    big = b"x" * 99999 + b"\n"
    for c in cs:
        c.sendall(big)
    for f in fs:
        assert f.readline() == big
    for f, c in zip(fs, cs):
        f.close()
        c.close()
    h = socket.create_connection(addr, timeout=10)
    h.sendall(b"half a li")
    h.close()
    s = socket.create_connection(addr, timeout=10)
    s.sendall(b"STOP\n")
    f = s.makefile("rb")
    assert f.readline() == b"BYE\n"
    assert f.read() == b""
    s.close()
    print("drive-server: all checks passed")


def check():
    import subprocess

    me = [sys.executable, os.path.abspath(__file__)]
    failures = 0

    def compare(name, out):
        nonlocal failures
        with open(os.path.join(HERE, name + ".exp"), "rb") as f:
            same = f.read() == out
        print(name, "OK" if same else "DIFFERS:\n" + out.decode(errors="replace"))
        failures += not same

    for name in ("asyncio_tasks", "asyncio_streams"):
        p = subprocess.run(me + ["run", os.path.join(HERE, name + ".py")], capture_output=True,
                           timeout=120)
        compare(name, p.stdout)
    peer = subprocess.Popen(me + ["echo-server", "9862"], stdout=subprocess.PIPE)
    try:
        peer.stdout.readline()  # listening
        p = subprocess.run(me + ["run", os.path.join(HERE, "asyncio_client.py"), "127.0.0.1",
                                 "9862"], capture_output=True, timeout=120)
        compare("asyncio_client", p.stdout)
    finally:
        peer.kill()
        peer.wait()
    server = subprocess.Popen(me + ["run", os.path.join(HERE, "asyncio_echo_server.py"), "9863"],
                              stdout=subprocess.PIPE)
    try:
        first = server.stdout.readline()
        driver = subprocess.run(me + ["drive-server", "9863"], timeout=120)
        out, _ = server.communicate(timeout=120)
        compare("asyncio_echo_server", first + out)
        if driver.returncode:
            print("drive-server failed")
            failures += 1
    finally:
        server.kill()
        server.wait()
    return 1 if failures else 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "run":
        run(sys.argv[2], sys.argv[3:])
    elif cmd == "echo-server":
        echo_server(int(sys.argv[2]))
    elif cmd == "drive-server":
        drive_server(int(sys.argv[2]))
    elif cmd == "check":
        sys.exit(check())
    else:
        sys.exit(__doc__)
