# tls_conversions: each argument conversion of the guest's tls/ssl modules (the table at the
# top of guest-python/lib/tls.py): a wrong type or value raises OSError with the table's
# errno and never traps the guest; values the table converts work.
#
#   tls_conversions.py ECHO
#
# ECHO: a native TLS server on 127.0.0.1 (certificate of the test CA /pki/ca.pem for
# localhost and 127.0.0.1) answering each chunk in upper case. Needs connect on 127.0.0.1:*,
# resolve=localhost; /pki holds ca.pem, ca.der, server.pem, server.key. Reaching the last
# line ("done") shows that no call trapped the component. Stdout must equal
# tls_conversions.exp.
import array
import pathlib
import sys

import usocket as socket
import uselect as select
import uerrno as errno
import ssl
import tls

ECHO = int(sys.argv[1])
CA = open("/pki/ca.pem", "rb").read()


def E(f):
    try:
        return ("ok", f())
    except OSError as e:
        if e.args != (e.errno,) or type(e) is not OSError or e.__context__ is not None:
            return ("badly shaped OSError", e.args, type(e).__name__)
        return ("OSError", errno.errorcode.get(e.errno, e.errno))
    except Exception as e:
        return (type(e).__name__, None)


def T(name, f):
    print(name, E(f))


def client():
    return tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)


def server():
    return tls.SSLContext(tls.PROTOCOL_TLS_SERVER)


# SSLContext(protocol): 0 or 1
T("protocol str", lambda: tls.SSLContext("0"))
T("protocol None", lambda: tls.SSLContext(None))
T("protocol float", lambda: tls.SSLContext(0.0))
T("protocol 2 (DTLS)", lambda: tls.SSLContext(2))
T("protocol -1", lambda: tls.SSLContext(-1))
T("protocol True", lambda: tls.SSLContext(True).protocol)
T("ssl protocol str", lambda: ssl.SSLContext("1"))

# verify_mode, cert_reqs: 0, 1, 2
def set_mode(value):
    c = client()
    c.verify_mode = value
    return c.verify_mode


T("verify_mode 3", lambda: set_mode(3))
T("verify_mode -1", lambda: set_mode(-1))
T("verify_mode str", lambda: set_mode("2"))
T("verify_mode float", lambda: set_mode(2.0))
T("verify_mode None", lambda: set_mode(None))
T("verify_mode bool", lambda: set_mode(True))
T("wrap_socket cert_reqs 7", lambda: ssl.wrap_socket(socket.socket(), cert_reqs=7))

# load_cert_chain: data (buffer, PEM str) or a path (str, os.PathLike)
T("certfile int", lambda: client().load_cert_chain(5))
T("certfile None", lambda: client().load_cert_chain(None))
T("keyfile int", lambda: client().load_cert_chain(b"cert", 5))
T("certfile missing", lambda: client().load_cert_chain("/pki/missing.pem"))
T("certfile a directory", lambda: client().load_cert_chain("/pki"))
T("certfile NUL in path", lambda: client().load_cert_chain("/pki/ca\0.pem"))
T("certfile surrogate", lambda: client().load_cert_chain("/pki/\ud800.pem"))
T("certfile path", lambda: client().load_cert_chain("/pki/server.pem", "/pki/server.key"))
T("certfile pathlib", lambda: client().load_cert_chain(pathlib.Path("/pki/server.pem")))
T("certfile PEM str", lambda: client().load_cert_chain(CA.decode()))
T("certfile bytearray", lambda: client().load_cert_chain(bytearray(b"x"), memoryview(b"k")))
T("certfile array", lambda: client().load_cert_chain(array.array("B", b"x")))
T("wrap_socket key without cert", lambda: ssl.wrap_socket(socket.socket(), key=b"k"))
T("wrap_socket cert int", lambda: ssl.wrap_socket(socket.socket(), cert=5))

# load_verify_locations: cafile as certfile; cadata a buffer or str
T("no CA", lambda: client().load_verify_locations())
T("cafile int", lambda: client().load_verify_locations(5))
T("cadata int", lambda: client().load_verify_locations(cadata=5))
T("cadata list", lambda: client().load_verify_locations(cadata=[1, 2]))
T("cadata surrogate", lambda: client().load_verify_locations(cadata="\ud800"))
T("cafile missing", lambda: client().load_verify_locations("/pki/missing.pem"))
T("cadata str", lambda: client().load_verify_locations(cadata=CA.decode()))
T("cafile data (tls style)", lambda: client().load_verify_locations(CA))
T("cafile and cadata", lambda: client().load_verify_locations("/pki/ca.pem", open("/pki/ca.der", "rb").read()))
T("wrap_socket cadata int", lambda: ssl.wrap_socket(socket.socket(), cadata=5))

# wrap_socket(sock, server_side, do_handshake_on_connect, server_hostname)
plain = socket.socket()
T("sock int", lambda: client().wrap_socket(5))
T("sock None", lambda: client().wrap_socket(None))
T("sock file", lambda: client().wrap_socket(plain.makefile("rwb")))
T("sock datagram", lambda: client().wrap_socket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)))
T("server_hostname bytes", lambda: client().wrap_socket(plain, server_hostname=b"localhost"))
T("server_hostname int", lambda: client().wrap_socket(plain, server_hostname=5))
T("server_hostname surrogate", lambda: client().wrap_socket(plain, server_hostname="\ud800"))
T("server_side on a client context", lambda: client().wrap_socket(plain, server_side=True))
T("server_side on a client context (ssl)", lambda: ssl.SSLContext(0).wrap_socket(plain, True))


def verifying_server():
    c = server()
    c.verify_mode = tls.CERT_REQUIRED
    return c.wrap_socket(plain, server_side=True)


T("server context verifying clients", verifying_server)
T("wrap_socket server_side cert_reqs", lambda: ssl.wrap_socket(plain, server_side=True, cert=b"c", cert_reqs=2))
# Valid arguments reach the host, which answers for the socket's state.
T("valid, unconnected", lambda: client().wrap_socket(plain, server_hostname="localhost"))
T("do_handshake any object", lambda: ssl.wrap_socket(plain, do_handshake="yes"))
plain.close()
T("valid, closed", lambda: client().wrap_socket(plain))
T("invalid, closed", lambda: client().wrap_socket(plain, server_hostname=5))

# An SSLSocket: its stream methods convert as usocket's; getpeercert(binary_form).
s = socket.socket()
s.settimeout(10)
s.connect(("127.0.0.1", ECHO))
ctx = client()
ctx.load_verify_locations(cadata=CA)
t = ctx.wrap_socket(s, server_hostname="localhost")
T("write int", lambda: t.write(5))
T("send None", lambda: t.send(None))
T("recv str", lambda: t.recv("5"))
T("read float", lambda: t.read(1.5))
T("readline str", lambda: t.readline("1"))
T("readinto bytes", lambda: t.readinto(b"xx"))
T("settimeout str", lambda: t.settimeout("1"))
T("getpeercert()", lambda: t.getpeercert())
T("getpeercert(False)", lambda: t.getpeercert(False))
T("getpeercert(1)", lambda: type(t.getpeercert(1)).__name__)
T("wrap twice", lambda: client().wrap_socket(s))
T("wrap the SSLSocket", lambda: client().wrap_socket(t))
p = select.poll()
T("poll register", lambda: p.register(t, select.POLLIN))
T("write memoryview", lambda: t.write(memoryview(b"ok\n")))
T("select", lambda: [o is t for o in select.select([t], [], [], 5)[0]])
T("poll", lambda: [(o is t, ev & select.POLLIN) for o, ev in p.poll(5000)])
T("readline", lambda: t.readline())
T("getpeername", lambda: t.getpeername()[0])
t.close()
T("getpeercert closed", lambda: t.getpeercert(True))
print("done")
