"""The README's example of adding a network runs as written."""
import re
from pathlib import Path

import torch

from asr.nnet import NnetConfig
from asr.nnet.models import NETWORKS, build_net, net_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_network_example_registers_and_runs():
    code = re.search(r"```python\n(# my_models.py.*?)```", README.read_text(), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    try:
        cfg = NnetConfig(model="lstm", hidden_dim=16, num_layers=1, dropout=0.0, norm="none")
        net = build_net(net_spec(cfg, input_dim=8, num_pdfs=5))
        out = net(torch.zeros(3, cfg.context_left + 1 + cfg.context_right, 8))
        assert out.shape == (3, 5)
        assert build_net(net.spec).spec == net.spec
    finally:
        NETWORKS.pop("lstm", None)
