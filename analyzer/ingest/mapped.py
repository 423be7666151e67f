"""Row blocks of an input file as read-only memory maps, and one clear line if the file shrinks under them.

Why maps: a ``read()`` copies every byte out of the page cache, and at 10M LAION rows (10 GB of float16 vectors)
that copy was the largest single cost of the reader: 0.5 CPU-seconds per GB on the development VM against
0.2 s per GB to map the same rows and check them for NaN/inf (benchmarks/bench_scan_embeddings.py). Each batch
maps only its own rows (``map_block``) and the map is released with the last reference to the batch's vectors, so
the process holds a few batches of mapped pages at a time, never the whole file.

The risk of a map: a file truncated *while* the scan reads it (after the size check that every block makes first)
raises SIGBUS on the next access to a page past its new end, which would kill the process with "Bus error" and no
word of what happened. ``install_bus_error_handler`` installs a handler for SIGBUS, compiled with llvmlite (a few
milliseconds; numba's own dependency), that writes ``BUS_ERROR_MESSAGE`` to stderr and exits with status 2, the
exit status of every other bad input. A signal handler cannot run Python, so the line names no file; the run
directory stays incomplete (no ``_SUCCESS``), as after any stopped scan. tests/test_mapped.py truncates a mapped
file in a subprocess and checks the line and the status.
"""
from __future__ import annotations

import mmap
import signal
import threading

import numpy as np

BUS_ERROR_MESSAGE = (
    "analyzer: error: expected the input files to stay unchanged while the scan reads them, got a bus error on a "
    "memory-mapped input file (truncated or replaced during the scan); the run is incomplete: check the inputs, then "
    "re-run the same command to resume\n"
)

_HANDLER: list = []  # [execution engine, address]: the engine owns the handler's code, so it lives as long as the process
_LOCK = threading.Lock()


def install_bus_error_handler() -> bool:
    """Install the SIGBUS handler (once per process; thread-safe). False where it cannot be (no SIGBUS, as on
    Windows, or llvmlite missing): maps are then used without it, and a file cut under the scan ends it with the
    system's "Bus error"."""
    if _HANDLER:
        return True
    if not hasattr(signal, "SIGBUS"):
        return False
    with _LOCK:
        if _HANDLER:
            return True
        try:
            engine, address = _compile_handler(BUS_ERROR_MESSAGE.encode())
            import ctypes

            libc = ctypes.CDLL(None)
            libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
            libc.signal.restype = ctypes.c_void_p
            libc.signal(int(signal.SIGBUS), address)
        except Exception:  # noqa: BLE001 - the maps work without it; the docstring says what is lost
            return False
        _HANDLER.extend([engine, address])
    return True


def _compile_handler(message: bytes):
    """A C function ``void on_bus_error(int)`` that calls ``write(2, message)`` and ``_exit(2)``, both
    async-signal-safe, compiled in memory with llvmlite."""
    import llvmlite.binding as llvm
    from llvmlite import ir

    module = ir.Module(name="analyzer_bus_error")
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    text = ir.ArrayType(i8, len(message))
    msg = ir.GlobalVariable(module, text, name="message")
    msg.global_constant, msg.linkage, msg.initializer = True, "private", ir.Constant(text, bytearray(message))
    write = ir.Function(module, ir.FunctionType(i64, [i32, i8.as_pointer(), i64]), name="write")
    exit_ = ir.Function(module, ir.FunctionType(ir.VoidType(), [i32]), name="_exit")
    handler = ir.Function(module, ir.FunctionType(ir.VoidType(), [i32]), name="on_bus_error")
    b = ir.IRBuilder(handler.append_basic_block())
    b.call(write, [ir.Constant(i32, 2), b.bitcast(msg, i8.as_pointer()), ir.Constant(i64, len(message))])
    b.call(exit_, [ir.Constant(i32, 2)])
    b.unreachable()
    try:
        llvm.initialize()  # needed by older llvmlite; newer ones initialise themselves and refuse the call
    except RuntimeError:
        pass
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    engine = llvm.create_mcjit_compiler(parsed, llvm.Target.from_default_triple().create_target_machine())
    engine.finalize_object()
    return engine, engine.get_function_address("on_bus_error")


def map_block(fh, start: int, nbytes: int) -> memoryview:
    """Bytes ``start .. start + nbytes`` of the open file ``fh`` as a read-only memoryview of a private map. The
    caller checks first that the file is that long. The map is unmapped when the last view of it is released."""
    if nbytes <= 0:
        return memoryview(b"")
    base = start - start % mmap.ALLOCATIONGRANULARITY
    m = mmap.mmap(fh.fileno(), start + nbytes - base, access=mmap.ACCESS_READ, offset=base)
    if hasattr(m, "madvise") and hasattr(mmap, "MADV_WILLNEED"):
        m.madvise(mmap.MADV_WILLNEED)  # read ahead the whole block when it is not in the page cache yet
    return memoryview(m)[start - base:]


__all__ = ["BUS_ERROR_MESSAGE", "install_bus_error_handler", "map_block"]
