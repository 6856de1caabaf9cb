"""MicroPython's ``uerrno`` (``errno``): the error numbers of the usocket contract.

The numbers are Linux's, as MicroPython's ``errno`` module uses on every port (and as the
host reports them). They are *not* CPython's own ``errno`` numbers on this platform: CPython
on WASI uses WASI's numbering (its ``errno.EAGAIN`` is 6). Socket errors from ``usocket`` and
``uselect`` carry these numbers in ``e.errno`` and ``e.args[0]``.

The negative ``EAI_*`` codes are ``getaddrinfo``'s own namespace (MicroPython has no names
for them; they are here, and in ``errorcode``, so programs need not write the numbers).

TLS (``tls``/``ssl``, and ``IPPROTO_SEC`` sockets) adds EPROTO (the TLS protocol failed: an
alert, no common version or cipher suite, a peer that does not speak TLS), EBADMSG (a
malformed or badly signed certificate), ENOKEY (the certificate does not chain to a trusted
CA), EKEYEXPIRED (expired or not yet valid) and EKEYREJECTED (not valid for the name it was
verified against); Linux's numbers, as the host reports them.
"""

EPERM = 1
ENOENT = 2
EIO = 5
EBADF = 9
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EEXIST = 17
EINVAL = 22
EPIPE = 32
EPROTO = 71
EBADMSG = 74
ENOPROTOOPT = 92
EOPNOTSUPP = 95
EAFNOSUPPORT = 97
EADDRINUSE = 98
EADDRNOTAVAIL = 99
ENETUNREACH = 101
ECONNABORTED = 103
ECONNRESET = 104
ENOBUFS = 105
EISCONN = 106
ENOTCONN = 107
ETIMEDOUT = 110
ECONNREFUSED = 111
EHOSTUNREACH = 113
EALREADY = 114
EINPROGRESS = 115
ENOKEY = 126
EKEYEXPIRED = 127
EKEYREJECTED = 129

# getaddrinfo only (negative).
EAI_NONAME = -2
EAI_AGAIN = -3
EAI_FAMILY = -6
EAI_ADDRFAMILY = -9

# MicroPython's `errno.errorcode`: number -> name.
errorcode = dict(
    sorted(
        ((value, name) for name, value in globals().items() if name[:1] == "E" and type(value) is int),
        key=lambda item: item[0],
    )
)
