# tls_verify: a guest TLS client's certificate checks against native TLS servers
# (cli/tests/python_tls.rs); each failure is OSError with its own errno.
#
#   tls_verify.py GOOD WRONG_NAME OTHER_CA EXPIRED
#
# Ports on 127.0.0.1 of servers presenting: a certificate of the test CA for localhost and
# 127.0.0.1 (GOOD), one of the test CA for wrong.test only (WRONG_NAME), one of another CA
# (OTHER_CA), an expired one of the test CA (EXPIRED). The test CA is /pki/ca.pem; the host
# trusts only its system roots (no --tls-ca). Needs connect on 127.0.0.1:* and resolve of
# localhost only. Stdout must equal tls_verify.exp.
import sys

import usocket as socket
import uerrno as errno
import ssl
import tls

GOOD, WRONG_NAME, OTHER_CA, EXPIRED = [int(a) for a in sys.argv[1:5]]
CA = open("/pki/ca.pem", "rb").read()
REQUIRED = ssl.CERT_REQUIRED


def connect(port, proto=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def attempt(what, port, **kw):
    s = connect(port)
    try:
        t = ssl.wrap_socket(s, **kw)
    except OSError as e:
        print(what, "OSError", e.errno, errno.errorcode.get(e.errno), e.args == (e.errno,))
        return s
    t.write(b"hello\n")
    print(what, "ok", t.readline())
    t.close()
    return s


attempt("verified", GOOD, cadata=CA, cert_reqs=REQUIRED, server_hostname="localhost").close()
attempt("name mismatch (server_hostname)", WRONG_NAME, cadata=CA, cert_reqs=REQUIRED,
        server_hostname="localhost").close()
attempt("name mismatch (address)", WRONG_NAME, cadata=CA, cert_reqs=REQUIRED).close()
attempt("unknown CA", OTHER_CA, cadata=CA, cert_reqs=REQUIRED, server_hostname="localhost").close()
attempt("test CA not in the host's roots", GOOD, cert_reqs=REQUIRED,
        server_hostname="localhost").close()
attempt("expired", EXPIRED, cadata=CA, cert_reqs=REQUIRED, server_hostname="localhost").close()
attempt("CERT_OPTIONAL verifies too", OTHER_CA, cadata=CA, cert_reqs=ssl.CERT_OPTIONAL).close()
attempt("CERT_NONE, another CA", OTHER_CA).close()
attempt("CERT_NONE, wrong name", WRONG_NAME, server_hostname="localhost").close()
attempt("server_hostname not granted", GOOD, cadata=CA, cert_reqs=REQUIRED,
        server_hostname="example.com").close()

# A failed handshake is sticky: the socket keeps reporting it, and closes.
s = attempt("sticky", OTHER_CA, cadata=CA, cert_reqs=REQUIRED)
try:
    s.write(b"x")
except OSError as e:
    print("sticky write", e.errno)
s.close()

# tls.SSLContext verifies by default: against the host's roots here.
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
s = connect(GOOD)
try:
    ctx.wrap_socket(s, server_hostname="localhost")
except OSError as e:
    print("tls.SSLContext default", e.errno)
s.close()

# IPPROTO_SEC: connect runs a verifying handshake with the host's roots.
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SEC)
s.settimeout(10)
try:
    s.connect(("127.0.0.1", GOOD))
    print("IPPROTO_SEC connected")
except OSError as e:
    print("IPPROTO_SEC", e.errno, errno.errorcode.get(e.errno))
s.close()
print("done")
