"""The service's malloc settings: a large block freed and allocated again reuses its pages."""

import subprocess
import sys
import textwrap

import pytest

REALLOCATE = textwrap.dedent(
    """
    import ctypes, resource, sys
    from service.edge.heap import tune_malloc_for_encoders

    if sys.argv[1] == "tuned":
        tune_malloc_for_encoders()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 64 * 1024 * 1024

    def touched_block():
        block = libc.malloc(SIZE)
        ctypes.memset(block, 1, SIZE)
        return block

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    first = touched_block()  # one batch's activation
    kept = libc.malloc(SIZE // 8)  # alive, carved after it: the heap's top stays above
    libc.free(first)
    before = faults()
    touched_block()  # the next batch's
    print(faults() - before)
    """
)


def page_faults_of_reallocation(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", REALLOCATE, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_freed_large_block_is_reused_without_new_pages():
    pages = 64 * 1024 * 1024 // 4096
    assert page_faults_of_reallocation("plain") > pages // 2  # mmapped again, zeroed again
    assert page_faults_of_reallocation("tuned") < pages // 20
