"""The capacity ladder: closed-form counts == fairseq-built models, the families match, the CLI table."""
import json

import pytest

import fairseq_kd  # noqa: F401
from fairseq_kd.cli import ladder as ladder_cli
from fairseq_kd.models import ladder


@pytest.mark.parametrize("vocab", [10000, 8000])
def test_every_preset_count_equals_built_model(vocab):
    """The table's numbers are what fairseq builds (meta device: no weights allocated)."""
    for row in ladder.ladder_rows(vocab):
        model = ladder.build_model(row["arch"], vocab, device="meta")
        assert ladder.num_params(model) == row["params"], row["arch"]
        assert model.encoder.layers[0].fc2.weight.shape[1] == row["ffn_width"]
        assert len(model.encoder.layers) == row["encoder_layers"] and len(model.decoder.layers) == row["decoder_layers"]
        assert model.encoder.layers[0].self_attn.num_heads == row["heads"]


def test_ladder_spans_3m_to_146m_with_matched_families():
    rows = ladder.ladder_rows(10000)
    sizes = sorted(r["params"] for r in rows)
    assert 2.5e6 < sizes[0] < 3.5e6 and 140e6 < sizes[-1] < 150e6
    by_size = {}
    for r in rows:
        by_size.setdefault(r["arch"].split("_")[-1], {})[r["family"]] = r["params"]
    for size in ladder.LADDER:
        fam = by_size[size.name]
        # matched counts: the GLU width rounds to the nearest unit, at most half a unit off per layer
        bound = (size.encoder_layers + size.decoder_layers) * (3 * size.embed_dim + 2) / 2
        assert abs(fam["glu"] - fam["relu"]) <= bound, size.name
        assert abs(fam["glu"] - fam["relu"]) / fam["relu"] < 5e-4, size.name
    for name, fam in by_size.items():
        nominal = float(name[:-1]) * 1e6
        assert abs(fam["relu"] - nominal) / nominal < 0.05, name  # the name tells the size


def test_ladder_cli_markdown_and_json(capsys):
    assert ladder_cli.cli_main(["--format", "json", "--vocab-size", "10000"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["vocab_size"] == 10000 and "vocab:10000" in out["signature"]
    assert [r["params"] for r in out["rows"]] == [r["params"] for r in ladder.ladder_rows(10000)]
    assert ladder_cli.cli_main(["--family", "glu", "--check"]) == 0
    md = capsys.readouterr().out
    assert md.count("`transformer_glu_") == len(ladder.LADDER) and "transformer_relu" not in md
    assert "| `transformer_glu_146m` | glu | 6 | 5 | 1024 | 16 | 2048 | 146,732,032 |" in md


def test_ladder_cli_bad_vocab(capsys):
    assert ladder_cli.cli_main(["--vocab-size", "3"]) == 2
    assert "--vocab-size" in capsys.readouterr().err
