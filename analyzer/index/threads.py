"""The index stage's threads: its own worker threads over chunks and lists, one BLAS / OpenMP thread per call.

Why: the stage's products are narrow (a chunk against 8 to 64 centroids, a list against the queries probing it),
where OpenBLAS's own threads cost more than they give, and faiss's OpenMP threads spin-wait against numpy's
OpenBLAS threads. Measured on the 2-vCPU development VM: a two-level k-means fit on 131,072 rows took 13.8
CPU-seconds with the libraries' threads and 2.1 on one thread each; a product of 1,200 rows by 26 centroids ran at
0.46 M rows/s on two OpenBLAS threads and 2.85 M rows/s on one; a faiss list search 19.7 ms on two OpenMP threads,
7.7 ms on one.
"""
from __future__ import annotations

import os
from contextlib import contextmanager


def workers() -> int:
    """Threads of the stage: one per CPU, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def one_omp_thread() -> None:
    """faiss on one OpenMP thread in the calling thread (OpenMP's thread count is per thread): the initializer of
    the stage's worker threads."""
    import faiss

    faiss.omp_set_num_threads(1)


@contextmanager
def single_threaded_libraries():
    """BLAS (numpy's and faiss's) and OpenMP on one thread in this process while the block runs."""
    import faiss  # noqa: F401 - loaded first: threadpoolctl limits the libraries loaded when it is called
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
