# tls_server: a guest TLS server for native TLS clients (cli/tests/python_tls.rs), with its
# certificate and key given as bytes (PEM, DER) or as files.
#
#   tls_server.py PORT
#
# Listens on 127.0.0.1:PORT, prints READY, then serves one connection per case below, in
# order: reads a line and answers "N LINE" (N the case), then closes (close_notify). Case 4 is
# STARTTLS: a plaintext "STARTTLS\n" line whose client sent its ClientHello in the same
# segment (so the guest's readline holds the hello in its read-ahead, which must go back to
# the host before TLS starts). Case 5 has a certificate the host cannot read: wrap_socket
# fails with EINVAL and the client's handshake fails. Stdout must equal tls_server.exp.
import sys

import usocket as socket
import uerrno as errno
import ssl
import tls

PORT = int(sys.argv[1])
CERT = open("/pki/server.pem", "rb").read()
KEY = open("/pki/server.key", "rb").read()
CERT_DER = open("/pki/server.der", "rb").read()
KEY_DER = open("/pki/server.key.der", "rb").read()

l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", PORT))
l.listen(4)
print("READY")
sys.stdout.flush()


def accept():
    c, _ = l.accept()
    c.settimeout(10)
    return c


def serve(case, t):
    line = t.readline()
    t.write(b"%d %s" % (case, line))
    print(case, line, "client certificate:", t.getpeercert(True))
    t.close()


# 1. ssl.wrap_socket with PEM bytes.
serve(1, ssl.wrap_socket(accept(), server_side=True, cert=CERT, key=KEY))

# 2. tls.SSLContext(PROTOCOL_TLS_SERVER) with files (paths, as MicroPython's ssl reads them).
ctx = tls.SSLContext(tls.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/pki/server.pem", "/pki/server.key")
serve(2, ctx.wrap_socket(accept(), server_side=True))

# 3. ssl.SSLContext with DER bytes; server_side comes from the context's protocol.
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT_DER, KEY_DER)
serve(3, ctx.wrap_socket(accept()))

# 4. STARTTLS: the plaintext line, then TLS on the same connection.
c = accept()
print(4, "plaintext", c.readline())
serve(4, ssl.wrap_socket(c, server_side=True, cert=CERT.decode(), key=KEY.decode()))

# 5. A certificate the host cannot use.
c = accept()
ctx = tls.SSLContext(tls.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(b"not a certificate", b"nor a key")
try:
    ctx.wrap_socket(c, server_side=True)
except OSError as e:
    print(5, "OSError", e.errno, errno.errorcode.get(e.errno))
c.close()
l.close()
print("done")
