"""One fairseq-train worker process for the distributed equality tests.

    python -m tests.distributed_worker SPEC.json RANK WORLD_SIZE PORT OUT.json

Runs every training of ``SPEC["runs"]`` in turn through ``fairseq_cli.train`` (stock
fairseq, launched as the README documents: one process per rank, gloo, tcp init,
``--distributed-no-spawn``, ``--ddp-backend legacy_ddp``). With WORLD_SIZE 1 the same
runs use ``--update-freq 2`` instead. Writes, per run, the ``train_inner`` log records
(fairseq's own JSON logging, one per update) to OUT.json (rank 0 only).
"""
import json
import logging
import sys


class _Records(logging.Handler):
    """Collects fairseq's per-update JSON log lines (progress bar records tagged ``train_inner``)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        if record.name == "train_inner":
            self.records.append(json.loads(record.getMessage()))


def launch_args(rank: int, world_size: int, port: int):
    """fairseq's options for one worker (the launch the README documents for CPU)."""
    if world_size == 1:
        return ["--distributed-world-size", "1", "--update-freq", "2"]
    return ["--distributed-world-size", str(world_size), "--distributed-rank", str(rank),
            "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
            "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]


def main(spec_path: str, rank: int, world_size: int, port: int, out_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq_cli import train as fs_train

    with open(spec_path) as f:
        spec = json.load(f)
    handler = _Records()
    logging.getLogger("fairseq.logging.progress_bar").addHandler(handler)
    out = {}
    for run in spec["runs"]:
        handler.records = []
        save_dir = f"{spec['root']}/{run['name']}/w{world_size}"
        argv = [*spec["common"], *run["args"], "--save-dir", save_dir, *launch_args(rank, world_size, port)]
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
        distributed_utils.call_main(convert_namespace_to_omegaconf(args), fs_train.main)
        out[run["name"]] = {"records": handler.records, "checkpoint": f"{save_dir}/checkpoint_last.pt"}
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
