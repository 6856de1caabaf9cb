# tls_client: a guest TLS client of a native TLS server (cli/tests/python_tls.rs), verified
# with the test CA the guest is given as data (cadata; /pki/ca.pem, /pki/ca.der): MicroPython's
# ssl.wrap_socket and SSLContext, the stream methods over TLS (readline's read-ahead, read,
# readinto, recv, send, sendall), getpeercert(True), CERT_NONE, close_notify both ways, and a
# peer that ends without close_notify.
#
#   tls_client.py PORT
#
# The server (127.0.0.1:PORT, a certificate for localhost and 127.0.0.1, /pki/server.der)
# answers each chunk it reads in upper case; "CUT\n": answers "cut\n" and
# closes without close_notify; "BYE\n": closes with close_notify. Needs connect on
# 127.0.0.1:PORT and resolve=localhost. Stdout must equal tls_client.exp.
import sys

import usocket as socket
import uerrno as errno
import ssl
import tls
import ussl

PORT = int(sys.argv[1])
SERVER_DER = open("/pki/server.der", "rb").read()
CA_PEM = open("/pki/ca.pem", "rb").read()
CA_DER = open("/pki/ca.der", "rb").read()


def connect():
    s = socket.socket()
    s.settimeout(10)
    s.connect(("127.0.0.1", PORT))
    return s


def err(f):
    try:
        return ("ok", f())
    except OSError as e:
        return ("OSError", e.errno, errno.errorcode.get(e.errno))


# MicroPython's values (extmod/modtls_mbedtls.c, extmod/ssl/ssl.py).
print("constants", tls.PROTOCOL_TLS_CLIENT, tls.PROTOCOL_TLS_SERVER, tls.CERT_NONE,
      tls.CERT_OPTIONAL, tls.CERT_REQUIRED, socket.IPPROTO_SEC)
print("tls defaults", tls.SSLContext(tls.PROTOCOL_TLS_CLIENT).verify_mode,
      tls.SSLContext(tls.PROTOCOL_TLS_SERVER).verify_mode)
print("ssl defaults", ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).verify_mode,
      ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).verify_mode)
print("one implementation", ssl.wrap_socket is tls.wrap_socket, ssl.SSLSocket is tls.SSLSocket,
      issubclass(ssl.SSLContext, tls.SSLContext), ussl is ssl)
print("errno", [(n, errno.errorcode[n]) for n in (71, 74, 126, 127, 129)])

# 1. ssl.wrap_socket: the CA as PEM bytes, CERT_REQUIRED, a granted server_hostname.
t = ssl.wrap_socket(connect(), cadata=CA_PEM, cert_reqs=ssl.CERT_REQUIRED,
                    server_hostname="localhost")
print("wrapped", type(t).__name__, repr(t).startswith("<SSLSocket"))
der = t.getpeercert(True)
print("peer certificate", type(der).__name__, der == SERVER_DER)
# Three lines in one write come back in one record: readline serves two from its read-ahead.
t.write(b"one\ntwo\nthree\n")
print(t.readline(), t.readline(), t.readline())
t.write("four\n")  # a str is its UTF-8 bytes, as in MicroPython
print(t.read(5))
buf = bytearray(6)
t.sendall(b"sixsix")
print(t.readinto(buf), buf)
print(t.send(b"recv\n"), t.recv(100))
# Lines again, then the read-ahead must not swallow what read() asks for next.
t.write(b"a\nbc\n")
print(t.readline(), t.read(3))
t.close()
t.close()
print("after close", err(lambda: t.write(b"x")), err(lambda: t.readline()))

# 2. tls.SSLContext (verifies by default) with the CA as DER, from load_verify_locations;
# no server_hostname: the host verifies the address the guest connected to (127.0.0.1).
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cadata=CA_DER)
with ctx.wrap_socket(connect()) as t:
    t.write(b"der ca, address name\n")
    print(t.readline())

# CAs add up: the DER one (turned into PEM) and another certificate from a file.
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cadata=CA_DER)
ctx.load_verify_locations("/pki/server.pem")
with ctx.wrap_socket(connect(), server_hostname="localhost") as t:
    t.write(b"two cas\n")
    print(t.readline())

# 3. The CA from a file (MicroPython's ssl: cafile is a path), and as PEM text.
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations("/pki/ca.pem")
t = ctx.wrap_socket(connect(), server_hostname="localhost")
t.write(b"cafile\n")
print(t.readline())
t.close()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cadata=CA_PEM.decode())
t = ctx.wrap_socket(connect(), server_hostname="localhost")
t.write(b"pem text\n")
print(t.readline())
t.close()

# 4. CERT_NONE: no CA given, nothing verified (MicroPython's default for wrap_socket and
# ssl.SSLContext).
t = ssl.wrap_socket(connect())
t.write(b"cert_none\n")
print(t.readline(), t.getpeercert(True) == der)
t.close()
t = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(connect())
t.write(b"ssl context default\n")
print(t.readline())
t.close()

# 5. The server ends with close_notify: a clean end of stream.
t = ssl.wrap_socket(connect(), cadata=CA_PEM, cert_reqs=ssl.CERT_REQUIRED)
t.write(b"BYE\n")
print("close_notify", t.read(), t.read())
t.close()

# 6. The server ends without close_notify: ECONNRESET once, then end of stream.
t = ssl.wrap_socket(connect(), cadata=CA_PEM, cert_reqs=ssl.CERT_REQUIRED)
t.write(b"CUT\n")
print("cut", t.readline(), err(t.readline), err(t.readline))
t.close()
print("done")
