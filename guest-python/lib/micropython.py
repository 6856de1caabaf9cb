"""MicroPython's ``micropython`` module, the parts a portable program uses: ``const`` (the
value itself) and the code-emitter decorators (which return the function unchanged)."""


def const(value):
    """``const(expr)``: the value (MicroPython folds it at compile time; CPython does not)."""
    return value


def native(f):
    return f


viper = native
asm_thumb = native


def opt_level(level=None):
    return 0 if level is None else None


def mem_info(*args):
    pass


def qstr_info(*args):
    pass


def alloc_emergency_exception_buf(size):
    pass


def schedule(func, arg):
    """Runs ``func(arg)`` at once (there are no interrupts to defer it from)."""
    func(arg)
