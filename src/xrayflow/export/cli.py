"""export a reconstruction result to the file formats of other codes.

Examples:

    xrayflow export recon.h5 --format ptychodus -o product.h5
    xrayflow export recon.h5 --format ptypy -o recon.ptyr
    xrayflow export crystal.h5 --format cohere -o results_phasing/
    xrayflow export crystal.h5 --format vtk -o crystal.vti

Formats (which ones a result offers depends on the modality that made it; the message
for a missing --format lists them per modality):

  ptychodus  ptychodus product file (HDF5; ptychodus opens it and runs pty-chi on it):
             object layers, probe modes, scan positions (m), pixel sizes, energy, distance.
             Ptychography results (far field, multislice, near field).
  ptypy      PtyPy .ptyr file (object and probe storages, pixel size, centre, positions).
             Ptychography as above.
  cohere     a cohere results_phasing folder (image.npy, support.npy, errors.npy).
             Bragg CDI.
  vtk        VTK XML image (.vti) for ParaView: Bragg CDI amplitude, phase, support,
             strain; ptycho-tomography delta and beta.

Datasets, units and axis orders of each format, and the version of each target's layout
that was followed: docs/data-format.md, section "Exports". Results written before the
detector distance was stored need --data DATA.cxi (the file they were reconstructed from)
for the ptychodus and ptypy formats. Bad inputs (a missing file, a format the result's
modality does not offer, an output that is the input) exit with status 2 and a one-line
message; the output appears only when complete.
"""

from __future__ import annotations

import argparse

from xrayflow.errors import ConfigError
from xrayflow.export.run import export, formats_for

#: The options of xrayflow.cli's common set this stage takes (no config, no --set).
COMMON_ARGUMENTS = {"config": False, "overrides": False, "out": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``xrayflow export``."""
    parser.add_argument("result", metavar="RESULT", help="result file of xrayflow reconstruct")
    parser.add_argument(
        "--format",
        "-f",
        dest="format",
        metavar="FMT",
        help="target format: ptychodus, ptypy, cohere or vtk (see above)",
    )
    parser.add_argument("--out", "-o", metavar="OUT", help="output file (cohere: output folder)")
    parser.add_argument(
        "--data",
        metavar="DATA.cxi",
        help="the data file the result was reconstructed from (only for geometry the result "
        "does not record: the detector distance of older results)",
    )


def run(args: argparse.Namespace) -> int:
    if not args.format:
        by_mod = "; ".join(f"{m}: {', '.join(f)}" for m, f in formats_for().items())
        raise ConfigError(f"--format FMT is required ({by_mod})")
    if not args.out:
        raise ConfigError("--out/-o OUT is required")
    out = export(args.result, args.format, args.out, data_path=args.data)
    print(f"wrote {out} ({args.format}, from {args.result})")
    return 0
