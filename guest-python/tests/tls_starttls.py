# tls_starttls: a guest client that starts TLS on a connection after a plaintext exchange
# (cli/tests/python_tls.rs).
#
#   tls_starttls.py CLEAN INJECTING
#
# Both servers on 127.0.0.1 send "220 go\r\n" in plaintext, then run TLS (a certificate of the
# test CA /pki/ca.pem for localhost and 127.0.0.1) and answer each chunk in upper case.
# INJECTING sends "INJECTED\r\n" right behind its plaintext line, in the same segment, so that
# readline holds it in its read-ahead when the guest starts TLS: those bytes go back to the
# host and start the TLS stream (they are not TLS: EPROTO), and are never read as if they had
# come through TLS. Needs connect on 127.0.0.1:*, resolve=localhost. Stdout must equal
# tls_starttls.exp.
import sys

import usocket as socket
import tls

CLEAN, INJECTING = int(sys.argv[1]), int(sys.argv[2])
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cadata=open("/pki/ca.pem", "rb").read())


def starttls(port):
    s = socket.socket()
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    print("plaintext", s.readline())
    try:
        t = ctx.wrap_socket(s, server_hostname="localhost")
        t.write(b"over tls\n")
        print("tls", t.readline())
    except OSError as e:
        print("OSError", e.errno)
    s.close()


starttls(CLEAN)
starttls(INJECTING)
print("done")
