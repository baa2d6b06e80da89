"""Session-wide test settings.

MPI runs in the tests are single-node. The mpich wheel's UCX network module intermittently
fails at MPI_Init with "failed to unpack address, invalid bandwidth 0.00" when UCX offers its
TCP transport (pmodels/mpich#7417); shared memory is all a single node needs, so the test
processes (and the mpiexec/srun jobs they start) use ``UCX_TLS=self,sm`` unless the caller
chose otherwise.
"""

import os

os.environ.setdefault("UCX_TLS", "self,sm")
