"""bench/int8_error.py rounds weights exactly as CTranslate2's int8 quantizer does."""
import importlib.util
import os

import numpy as np
import pytest
import torch

ctranslate2 = pytest.importorskip("ctranslate2")

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_bench():
    spec = importlib.util.spec_from_file_location("int8_error", os.path.join(HERE, "..", "bench", "int8_error.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_round_weights_int8_equals_ctranslate2_dequantized():
    from ctranslate2.specs import common_spec

    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 6)
    with torch.no_grad():
        lin.weight[2].zero_()  # an all-zero row (a padded unit) stays zero
        lin.weight[4] *= 50.0  # rows have their own scales
    w = lin.weight.detach().numpy().copy()
    spec = common_spec.LinearSpec()
    spec.weight = w.copy()
    spec.validate()  # arrays -> CTranslate2 variables, as the export does before optimize()
    spec._quantize("int8")
    q = spec.weight.numpy().astype(np.float32)
    scale = spec.weight_scale.numpy()
    expected = q / scale[:, None]

    model = torch.nn.Sequential(lin)
    assert _load_bench().round_weights_int8(model) == 1
    got = lin.weight.detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got, w)  # it did round
    assert np.all(got[2] == 0)
