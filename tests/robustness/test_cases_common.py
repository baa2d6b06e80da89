"""Misuse that every stage must refuse the same way: bad config files and ``--set`` values,
and output paths that cannot be written safely."""

from __future__ import annotations

from pathlib import Path

import pytest
from robust_harness import (
    EVAL,
    GEN,
    INFER,
    RECON,
    SIM,
    TRAIN,
    Case,
    replace_arg,
    run_case,
    symlink,
    with_set,
    write_file,
)

# stage -> (argv, its config file, a numeric key for a NaN)
CONFIGURED = {
    "simulate": (SIM, "sim.yaml", "energy_ev"),
    "reconstruct": (RECON, "recon.yaml", "optimizer.object.lr"),
    "generate": (GEN, "train.yaml", "data.photons"),
    "train": (TRAIN, "train.yaml", "training.lr"),
}


def _duplicate_first_key(name: str):
    def prepare(ws: Path) -> None:
        p = ws / name
        text = p.read_text()
        first = text.split(":", 1)[0]
        p.write_text(text + f"{first}: null\n")

    return prepare


def _config_cases() -> list[Case]:
    cases = []
    for stage, (argv, cfg, num) in CONFIGURED.items():
        cases += [
            Case(f"{stage}-duplicate-key", argv, r"duplicate key", _duplicate_first_key(cfg)),
            Case(f"{stage}-nan-value", with_set(argv, f"{num}=.nan"), rf"{num}: NaN"),
            Case(f"{stage}-unknown-key", with_set(argv, "nonsense_key=1"), "nonsense_key.*unknown"),
            Case(f"{stage}-no-config", replace_arg(argv, "--config", "nope.yaml"), "nope.yaml"),
            Case(f"{stage}-config-is-dir", replace_arg(argv, "--config", "shards"), "directory"),
            Case(
                f"{stage}-config-not-mapping",
                replace_arg(argv, "--config", "list.yaml"),
                "must be a mapping",
                write_file("list.yaml", b"- 1\n- 2\n"),
            ),
            Case(
                f"{stage}-config-bad-yaml",
                replace_arg(argv, "--config", "bad.yaml"),
                r"bad\.yaml.*invalid YAML.*line",
                write_file("bad.yaml", b"seed: [1, 2\n"),
            ),
            Case(
                f"{stage}-config-binary",
                replace_arg(argv, "--config", "bin.yaml"),
                r"bin\.yaml.*cannot be read",
                write_file("bin.yaml", bytes(range(128, 256))),
            ),
            Case(f"{stage}-set-empty-key", with_set(argv, "=3"), "empty key"),
            Case(f"{stage}-set-no-equals", with_set(argv, "seed"), "KEY=VALUE"),
        ]
    return cases


# stage -> (argv, an input its --out could clobber through a symlink, folder output?)
OUTPUTS = {
    "simulate": (SIM, "sim.yaml", False),
    "reconstruct": (RECON, "data.cxi", False),
    "evaluate": (EVAL, "recon.h5", False),
    "generate": (GEN, "train.yaml", True),
    "train": (TRAIN, "shards/shard-00000.h5", False),
    "infer": (INFER, "model.pt", False),
}


def _output_cases() -> list[Case]:
    cases = []
    for stage, (argv, victim, is_dir) in OUTPUTS.items():
        occupied = "data.cxi" if is_dir else "shards"
        cases += [
            Case(f"{stage}-out-empty", replace_arg(argv, "--out", ""), "empty"),
            Case(f"{stage}-out-dev-full", replace_arg(argv, "--out", "/dev/full"), "dev/full"),
            Case(
                f"{stage}-out-occupied",
                replace_arg(argv, "--out", occupied),
                rf"{occupied}.*(is a directory|not a directory)",
            ),
            Case(
                f"{stage}-out-missing-dir",
                replace_arg(argv, "--out", "no/such/dir/out"),
                r"no/such/dir.*does not exist",
            ),
            Case(f"{stage}-out-proc", replace_arg(argv, "--out", "/proc/out"), "cannot write"),
            Case(
                f"{stage}-out-symlink-to-input",
                replace_arg(argv, "--out", "alias"),
                rf"alias.*overwrite.*{victim}",
                symlink("alias", victim),
            ),
        ]
    return cases


CASES = _config_cases() + _output_cases()


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_every_stage_refuses(case, pristine, tmp_path):
    run_case(case, pristine, tmp_path)
