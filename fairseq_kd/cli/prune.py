"""fairseq-kd-prune: an adaptive-capacity ``transformer_glu`` checkpoint -> a smaller one.

Drops every FFN unit whose eval-mode hard-concrete gate is 0, folds the remaining gate
values into ``fc2`` and writes a gate-free ``transformer_glu`` checkpoint whose
per-layer widths are in its args (``--encoder-ffn-widths``/``--decoder-ffn-widths``), so
``fairseq-generate --user-dir fairseq_kd --path pruned.pt`` rebuilds it. Before writing,
both models are rebuilt and run in eval mode on a random batch: the largest absolute
difference of their log-probabilities must stay below ``--tolerance``.

    fairseq-kd-prune -i exp/student/checkpoint_best.pt -o exp/student/pruned.pt
    fairseq-kd-prune -i ckpt.pt -o pruned.pt --json > prune.json

The optimizer state is not carried over (its shapes changed): fine-tune a pruned model
with ``--restore-file pruned.pt --reset-optimizer``.
"""
import argparse
import copy
import json
import logging
import os
import sys
import time
from typing import Dict, Tuple

import torch

from fairseq_kd import fileio, guard, validate
from fairseq_kd.errors import KDInputError

logger = logging.getLogger("fairseq_kd.cli.prune")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairseq-kd-prune",
        description="Remove closed capacity-gated FFN units from a transformer_glu checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io_ = p.add_argument_group("input / output")
    io_.add_argument("-i", "--input", required=True, help="adaptive-capacity transformer_glu checkpoint")
    io_.add_argument("-o", "--output", required=True, help="pruned checkpoint to write (atomically)")
    io_.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    io_.add_argument("--trust-checkpoint", action="store_true",
                     help="fully unpickle --input (only for a trusted legacy file)")
    chk = p.add_argument_group("verification")
    chk.add_argument("--tolerance", type=float, default=1e-4,
                     help="max abs log-prob difference allowed between gated and pruned models")
    chk.add_argument("--no-verify", action="store_true", help="skip rebuilding both models and comparing them")
    chk.add_argument("--verify-seed", type=int, default=1, help="seed of the random verification batch")
    rep = p.add_argument_group("reporting")
    rep.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    rep.add_argument("--quiet", action="store_true", help="no human-readable summary on stderr")
    return p


def signature(tolerance: float, verified: bool) -> str:
    """Reproducibility signature in sacrebleu style."""
    from fairseq_kd import __version__

    return f"gate:hard-concrete|eval:clamp(sigmoid*1.2-0.1)|keep:z>0|fold:fc2|verify:{'yes' if verified else 'no'}" \
           f"|tol:{tolerance:g}|version:{__version__}"


# ---------------------------------------------------------------- model args in a checkpoint

def _model_args(state: Dict):
    """The (mutable) model args of a fairseq checkpoint: ``cfg.model`` or legacy ``args``."""
    cfg = state.get("cfg")
    if cfg is not None and cfg.get("model") is not None:
        return cfg["model"]
    if state.get("args") is not None:
        return state["args"]
    raise KDInputError("checkpoint has neither cfg.model nor args: not a fairseq training checkpoint")


def _get(margs, key, default=None):
    return getattr(margs, key, default) if isinstance(margs, argparse.Namespace) else margs.get(key, default)


def _to_namespace(margs) -> argparse.Namespace:
    if isinstance(margs, argparse.Namespace):
        return copy.copy(margs)
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(margs, resolve=True) if OmegaConf.is_config(margs) else dict(margs)
    return argparse.Namespace(**d)


def vocab_sizes(model_state: Dict[str, torch.Tensor]) -> Tuple[int, int]:
    return (model_state["encoder.embed_tokens.weight"].shape[0], model_state["decoder.embed_tokens.weight"].shape[0])


def build(margs: argparse.Namespace, src_vocab: int, tgt_vocab: int, model_state=None):
    """Rebuild a model from checkpoint args (dictionary sizes from its embeddings)."""
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_MODEL_REGISTRY

    def make(n):
        d = Dictionary()
        for i in range(n - len(d)):
            d.add_symbol(f"w{i}")
        return d

    class _Task:
        source_dictionary = make(src_vocab)
        target_dictionary = source_dictionary if src_vocab == tgt_vocab else make(tgt_vocab)

    model = ARCH_MODEL_REGISTRY[margs.arch].build_model(copy.copy(margs), _Task())
    if model_state is not None:
        model.load_state_dict(model_state, strict=True)
    return model.eval()


@torch.no_grad()
def max_logprob_diff(a, b, src_vocab: int, tgt_vocab: int, seed: int = 1) -> float:
    """Largest |log p_a - log p_b| over a random batch (eval mode, teacher forcing)."""
    g = torch.Generator().manual_seed(seed)
    bsz, src_len, tgt_len = 4, 9, 8
    src = torch.randint(4, src_vocab, (bsz, src_len), generator=g)
    prev = torch.randint(4, tgt_vocab, (bsz, tgt_len), generator=g)
    prev[:, 0] = 2  # eos starts every target, as in fairseq
    lengths = torch.full((bsz,), src_len, dtype=torch.long)
    lp = [m.get_normalized_probs(m(src, lengths, prev), log_probs=True).float() for m in (a, b)]
    return float((lp[0] - lp[1]).abs().max())


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_checkpoint(inp: str, out: str, tolerance: float = 1e-4, verify: bool = True, seed: int = 1,
                     trust: bool = False, force: bool = False) -> Dict:
    """Prune ``inp`` into ``out``; returns the report (params before/after, per-layer units)."""
    import fairseq_kd  # noqa: F401  (allowlist + registrations)
    from fairseq.models import ARCH_MODEL_REGISTRY
    from omegaconf import OmegaConf

    from fairseq_kd.checkpoint_safety import load_checkpoint
    from fairseq_kd.models.pruning import prune_state_dict, widths_arg
    from fairseq_kd.models.transformer_glu import TransformerGLUModel

    guard.check_paths({"--input": inp}, {"--output": out})
    fileio.check_file(inp, f"checkpoint not found: {inp} (pass the adaptive-capacity checkpoint with -i)", "checkpoint")
    if os.path.exists(out) and not force:
        raise KDInputError(f"{out} exists: choose another -o or pass --force to overwrite it")
    state = load_checkpoint(inp, trust_file=trust)
    guard.check_paths(guard.named_by_checkpoint(state), {"--output": out})  # its data dir, teacher files
    margs = _model_args(state)
    arch = _get(margs, "arch") or _get(margs, "_name")
    if arch not in ARCH_MODEL_REGISTRY or not issubclass(ARCH_MODEL_REGISTRY[arch], TransformerGLUModel):
        raise KDInputError(f"{inp}: architecture {arch!r} is not a transformer_glu model; "
                           f"train with --arch transformer_glu* --adaptive-capacity")
    if not _get(margs, "adaptive_capacity", False) or not any(k.endswith(".fc1.gate.theta") for k in state["model"]):
        raise KDInputError(f"{inp}: no capacity gates (trained without --adaptive-capacity): nothing to prune")

    activation = str(_get(margs, "ffn_activation", "glu"))
    new_model_state, widths, layers = prune_state_dict(state["model"], activation)
    old_args = _to_namespace(margs)
    old_args.arch = arch
    new_args = copy.copy(old_args)
    new_args.adaptive_capacity = False
    new_args.encoder_ffn_widths = widths_arg(widths["encoder"])
    new_args.decoder_ffn_widths = widths_arg(widths["decoder"])

    src_vocab, tgt_vocab = vocab_sizes(state["model"])
    gated = build(old_args, src_vocab, tgt_vocab, state["model"])
    pruned = build(new_args, src_vocab, tgt_vocab, new_model_state)  # strict load checks every shape
    report = {
        "input": inp, "output": out, "arch": arch, "ffn_activation": activation,
        "params_before": count_params(gated), "params_after": count_params(pruned),
        "expected_after": gated.active_param_count(),
        "encoder_ffn_widths": widths["encoder"], "decoder_ffn_widths": widths["decoder"], "layers": layers,
    }
    report["reduction"] = 1.0 - report["params_after"] / report["params_before"]
    if verify:
        diff = max_logprob_diff(gated, pruned, src_vocab, tgt_vocab, seed)
        report["max_abs_logprob_diff"] = diff
        if not diff < tolerance:
            raise KDInputError(f"{inp}: pruned model differs from the gated one by {diff:.3g} in log-prob "
                               f"(> --tolerance {tolerance:g}); nothing written")
    report["signature"] = signature(tolerance, verify)

    # write: same checkpoint layout, pruned weights, new args, no stale optimizer state
    state["model"] = new_model_state
    state.pop("last_optimizer_state", None)
    if isinstance(state.get("extra_state"), dict):
        state["extra_state"].pop("ema", None)  # EMA weights have the old shapes
    if state.get("cfg") is not None:
        cfg = state["cfg"]
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg) else dict(cfg)
        cfg["model"] = new_args
        state["cfg"] = cfg
    else:
        state["args"] = new_args
    with fileio.atomic_open(out, "wb") as f:  # tmp file + rename; a full disk leaves no .tmp behind
        torch.save(state, f)
    return report


def summary(report: Dict) -> str:
    lines = [f"params before: {report['params_before']:,}",
             f"params after:  {report['params_after']:,} ({100 * report['reduction']:.1f}% fewer)"]
    for layer in report["layers"]:
        lines.append(f"  {layer['layer']}: {layer['kept']}/{layer['total']} FFN units kept")
    if "max_abs_logprob_diff" in report:
        lines.append(f"max |log p gated - log p pruned| = {report['max_abs_logprob_diff']:.2e}")
    lines.append(f"wrote {report['output']}")
    lines.append(report["signature"])
    return "\n".join(lines)


def cli_main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.time()
    try:
        validate.positive("--tolerance", args.tolerance)
        report = prune_checkpoint(args.input, args.output, tolerance=args.tolerance, verify=not args.no_verify,
                                  seed=args.verify_seed, trust=args.trust_checkpoint, force=args.force)
    except KDInputError as err:
        print(f"fairseq-kd-prune: error: {err}", file=sys.stderr)
        return 2
    report["seconds"] = round(time.time() - start, 3)
    if not args.quiet:
        print(summary(report), file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
