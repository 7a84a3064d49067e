"""Layer capture on tiny hand-weighted models whose activations are known exactly."""

import pytest
import torch
from torch import nn

from ncprobe.extract.extraction.capture import LayerCapture, LayerError, probe, resolve_layers
from ncprobe.extract.extraction.reduction import Reducer, ReductionError


class Tiny(nn.Module):
    """x -> fc1 (identity weights, bias -1) -> in-place ReLU -> shared (x2) applied twice."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.relu = nn.ReLU(inplace=True)
        self.shared = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(2))
            self.fc1.bias.fill_(-1.0)
            self.shared.weight.copy_(2 * torch.eye(2))
        self.capture_points = {"fc1": "fc1", "shared": "shared"}

    def forward(self, x):
        return self.shared(self.shared(self.relu(self.fc1(x))))


def test_known_activations_inplace_relu_and_double_call():
    m = Tiny()
    x = torch.tensor([[0.0, 3.0], [2.0, 0.5]])
    with LayerCapture(m, {"fc1": "fc1", "shared": "shared"}) as cap, torch.no_grad():
        out = m(x)
    # fc1's output is pre-ReLU: the in-place ReLU must not have changed what was captured
    torch.testing.assert_close(cap.outputs["fc1"], torch.tensor([[-1.0, 2.0], [1.0, -0.5]]))
    torch.testing.assert_close(cap.outputs["shared"], torch.tensor([[0.0, 4.0], [2.0, 0.0]]))
    torch.testing.assert_close(cap.outputs["shared.call2"], torch.tensor([[0.0, 8.0],
                                                                          [4.0, 0.0]]))
    torch.testing.assert_close(out, cap.outputs["shared.call2"])
    assert list(probe(m, {"fc1": "fc1", "shared": "shared"}, x)) == ["fc1", "shared",
                                                                     "shared.call2"]


def test_capture_straight_into_given_buffers():
    m = Tiny()
    x = torch.tensor([[0.0, 3.0], [2.0, 0.5]])
    host = torch.full((4, 2), 7.0, dtype=torch.float16)  # rows 1:3 are this batch's
    cap = LayerCapture(m, {"fc1": "fc1", "shared": "shared"})
    cap.reset(into={"fc1": host[1:3]})
    with cap, torch.no_grad():
        m(x)
    # one copy, made before the in-place ReLU ran, converted to the buffer's dtype
    torch.testing.assert_close(host, torch.tensor([[7.0, 7.0], [-1.0, 2.0], [1.0, -0.5],
                                                   [7.0, 7.0]], dtype=torch.float16))
    assert "fc1" not in cap.outputs and set(cap.outputs) == {"shared", "shared.call2"}
    assert cap.seen == ["fc1", "shared", "shared.call2"]
    cap.reset()
    assert cap.seen == [] and cap.outputs == {}


def test_hooks_removed_even_on_error():
    m = Tiny()
    with pytest.raises(RuntimeError), LayerCapture(m, {"fc1": "fc1"}):
        m(torch.zeros(1, 3))  # wrong width
    assert not m.fc1._forward_hooks


def test_resolve_by_name_or_path_and_error_lists_valid():
    m = Tiny()
    assert resolve_layers(m, ["fc1", "relu"]) == {"fc1": "fc1", "relu": "relu"}
    with pytest.raises(LayerError, match="layer 'fc9' not in model; capture points: fc1, shared"):
        resolve_layers(m, ["fc9"])


def test_reductions():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert Reducer("flatten", (3, 4, 4), "l")(x).shape == (2, 48)
    torch.testing.assert_close(Reducer("avgpool", (3, 4, 4), "l")(x), x.mean((2, 3)))
    torch.testing.assert_close(Reducer("maxpool", (3, 4, 4), "l")(x), x.amax((2, 3)))
    r = Reducer("avgpool:2", (3, 4, 4), "l")
    assert r.dim == 12 and r(x).shape == (2, 12)
    torch.testing.assert_close(r(x)[0, 0], x[0, 0, :2, :2].mean())
    p1, p2 = Reducer("flatten+proj:5", (3, 4, 4), "l"), Reducer("flatten+proj:5", (3, 4, 4), "l")
    assert p1.dim == 5 and torch.equal(p1(x), p2(x))  # fixed, seeded by the layer name
    assert not torch.equal(p1(x), Reducer("flatten+proj:5", (3, 4, 4), "other")(x))
    with pytest.raises(ReductionError, match="needs a spatial output"):
        Reducer("avgpool", (10,), "fc")
    with pytest.raises(ReductionError, match="unknown reduction"):
        Reducer("median", (3, 4, 4), "l")


def test_globs_match_module_paths_component_by_component():
    from ncprobe.extract.extraction.capture import glob_match

    assert glob_match("blocks.3", "blocks.*") and not glob_match("blocks.3.norm1", "blocks.*")
    assert glob_match("layer4", "layer?") and not glob_match("layer10", "layer?")
    assert glob_match("features.denseblock2", "features.denseblock*")
    m = Tiny()
    assert resolve_layers(m, ["fc*", "shared"]) == {"fc1": "fc1", "shared": "shared"}
    with pytest.raises(LayerError, match=r"layer glob 'conv\*' matches no module"):
        resolve_layers(m, ["conv*"])
