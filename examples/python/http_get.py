# http_get.py: fetch a page over HTTP/1.0 and print the response, MicroPython style.
#
#   usocket run --allow connect=127.0.0.1:8000 --allow resolve=localhost \
#       --dir examples/python::/app --allow-precompiled python.cwasm /app/http_get.py localhost 8000 /
#
# Exits 0 on success, 1 with `http_get: [Errno N] NAME` on a socket error, 2 on bad usage.
import sys
import usocket as socket
import uerrno as errno


def errname(n):
    return errno.errorcode.get(n, str(n))


def get(host, port, path):
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    s = socket.socket()
    try:
        s.settimeout(10)
        s.connect(addr)
        s.write(b"GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))
        # read() without a size reads until the server closes the connection.
        sys.stdout.write(s.read().decode("utf-8", "replace"))
    finally:
        s.close()


def main(argv):
    if len(argv) not in (3, 4) or not argv[2].isdigit():
        print("usage: http_get.py HOST PORT [PATH]", file=sys.stderr)
        return 2
    try:
        get(argv[1], int(argv[2]), argv[3] if len(argv) == 4 else "/")
    except OSError as e:
        print("http_get: [Errno %d] %s" % (e.errno, errname(e.errno)), file=sys.stderr)
        return 1
    return 0


sys.exit(main(sys.argv))
