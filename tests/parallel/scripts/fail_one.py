"""Rank 1 raises ``KIND`` while rank 0 waits in a collective: ``fail_one.py KIND``."""

import sys
import time

from xrayflow.errors import DataError
from xrayflow.parallel import abort_on_error

kind = sys.argv[1]
with abort_on_error() as comm:
    if comm.rank == 1:
        time.sleep(0.2)
        if kind == "data":
            raise DataError("frames.cxi: dataset /entry_1/data_1/data is truncated")
        raise MemoryError("cannot allocate 512 GiB for the volume gradient")
    comm.barrier()  # would wait forever without the abort
    time.sleep(60)
