# https_get.py: fetch a page over HTTPS (HTTP/1.0 over TLS, verified) and print the
# response, MicroPython style. TLS runs in the host; the server's certificate must chain to a
# CA the host trusts (its system roots, `usocket run --tls-ca FILE`) or to the CA file given
# with --cafile, and be valid for HOST.
#
#   usocket run --allow tls=example.com:443 --allow resolve=example.com \
#       --dir examples/python::/app --allow-precompiled python.cwasm /app/https_get.py example.com
#   usocket run --allow connect=127.0.0.1:8443 --allow resolve=localhost \
#       --dir examples/python::/app --dir pki::/pki --allow-precompiled python.cwasm \
#       /app/https_get.py --cafile /pki/ca.pem localhost 8443 /
#
# Exits 0 on success, 1 with `https_get: [Errno N] NAME` on a socket or TLS error (e.g.
# ENOKEY 126: unknown CA; EKEYREJECTED 129: not valid for HOST), 2 on bad usage.
import sys
import usocket as socket
import uerrno as errno
import tls


def errname(n):
    return errno.errorcode.get(n, str(n))


def get(host, port, path, cafile):
    context = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)  # verifies: CERT_REQUIRED
    if cafile is not None:
        context.load_verify_locations(cafile=cafile)
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(10)
        s.connect(addr)
        # The handshake runs here; the certificate is verified for `host`.
        s = context.wrap_socket(s, server_hostname=host)
        s.write(b"GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))
        # read() without a size reads until the server ends the TLS stream.
        sys.stdout.write(s.read().decode("utf-8", "replace"))
    finally:
        s.close()


def main(argv):
    args = argv[1:]
    cafile = None
    if len(args) >= 2 and args[0] == "--cafile":
        cafile = args[1]
        args = args[2:]
    if not 1 <= len(args) <= 3 or (len(args) >= 2 and not args[1].isdigit()):
        print("usage: https_get.py [--cafile FILE] HOST [PORT [PATH]]", file=sys.stderr)
        return 2
    host = args[0]
    port = int(args[1]) if len(args) >= 2 else 443
    path = args[2] if len(args) == 3 else "/"
    try:
        get(host, port, path, cafile)
    except OSError as e:
        print("https_get: [Errno %d] %s" % (e.errno, errname(e.errno)), file=sys.stderr)
        return 1
    return 0


sys.exit(main(sys.argv))
