"""One ast.parse at a time in the app's process: CPython 3.11's is not safe in two threads at once."""
import ast
import functools
import threading

_LOCK = threading.RLock()  # re-entrant: a parse that runs a finaliser which parses does not wait on itself


def serialise_ast_parse() -> None:
    """Make ast.parse take one process-wide lock (once: a second call changes nothing).

    CPython 3.11 keeps the AST builder's recursion depth in one counter for the whole interpreter, so two threads in
    ast.parse at once can trip its check: "SystemError: AST constructor recursion depth mismatch" (python/cpython
    #106905). A fresh clone's browser test met it: the Train page failed while Streamlit compiled pages/train.py
    (Streamlit, torch's first import and inspect all parse with ast.parse)."""
    if getattr(ast.parse, "serialised", False):
        return
    parse = ast.parse

    @functools.wraps(parse)
    def serialised(*args, **kwargs):
        with _LOCK:
            return parse(*args, **kwargs)

    serialised.serialised = True
    ast.parse = serialised
