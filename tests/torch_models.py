"""Small members of the torchvision families, exported by torch.onnx.export.

    /work/torchvenv/bin/python tests/torch_models.py [OUT_DIR]

Needs torch and torchvision (not part of scripts/setup.sh: the wheels are
large). Writes, for each family, FAMILY.legacy.onnx (the TorchScript exporter,
dynamo=False, weights inside) and FAMILY.dynamo.onnx with FAMILY.dynamo.onnx.data
(today's default exporter, weights as external data), both with a dynamic batch.
The outputs are committed under tests/fixtures/torch; tests/run_models.py runs
them on every strategy against ONNX Runtime.

Each model is torchvision's own building blocks at small widths on 3x32x32
inputs, with random weights and eval() (so BatchNormalization uses running
statistics, which are randomised too so that it is not the identity).
"""
import importlib
import os
import sys
from functools import partial

import torch
from torch import nn
import torchvision
from torchvision.ops.misc import SqueezeExcitation

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 32


def head(channels, classes=10):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]


def stem(out, stride=1):
    return [nn.Conv2d(3, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]


def resnet_basic():
    from torchvision.models.resnet import BasicBlock
    down = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
    return nn.Sequential(*stem(8), BasicBlock(8, 8), BasicBlock(8, 16, 2, down), *head(16))


def resnet_bottleneck():
    from torchvision.models.resnet import Bottleneck
    down = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
    return nn.Sequential(*stem(8), Bottleneck(8, 4, 2, down), Bottleneck(16, 4), *head(16))


def mobilenet_v2():
    from torchvision.models.mobilenetv2 import InvertedResidual
    return nn.Sequential(*stem(8), InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 12, 2, 6),
                         nn.Conv2d(12, 16, 1), nn.ReLU6(), *head(16))


def mobilenet_v3():
    from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    blocks = [InvertedResidual(InvertedResidualConfig(*c, width_mult=1.0), norm) for c in [
        (8, 3, 16, 8, True, "RE", 2, 1),
        (8, 5, 32, 16, True, "HS", 1, 1),
        (16, 3, 48, 16, False, "HS", 1, 1),
    ]]
    # Widths are rounded to multiples of 8 by the config.
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Hardswish(), *blocks, *head(16))


def efficientnet():
    from torchvision.models.efficientnet import MBConv, MBConvConfig
    norm = nn.BatchNorm2d
    blocks = [MBConv(MBConvConfig(*c), 0.0, norm) for c in [
        (1, 3, 1, 8, 8, 1), (4, 5, 2, 8, 16, 1), (4, 3, 1, 16, 16, 1)]]
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.SiLU(), *blocks, *head(16))


def squeezenet():
    from torchvision.models.squeezenet import Fire
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, ceil_mode=True), Fire(8, 4, 8, 8), Fire(16, 4, 8, 8),
                         nn.Dropout(0.5), nn.Conv2d(16, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())


def googlenet():
    g = importlib.import_module("torchvision.models.googlenet")
    return nn.Sequential(*stem(8), nn.MaxPool2d(3, 2, ceil_mode=True),
                         g.Inception(8, 4, 4, 8, 2, 4, 4), *head(20))


def densenet():
    d = importlib.import_module("torchvision.models.densenet")
    return nn.Sequential(*stem(8), d._DenseBlock(2, 8, 2, 4, 0.0), d._Transition(16, 8),
                         d._DenseBlock(2, 8, 2, 4, 0.0), nn.BatchNorm2d(16), nn.ReLU(), *head(16))


def shufflenet():
    from torchvision.models.shufflenetv2 import InvertedResidual
    return nn.Sequential(*stem(8), InvertedResidual(8, 16, 2), InvertedResidual(16, 16, 1),
                         *head(16))


def regnet():
    from torchvision.models.regnet import ResBottleneckBlock
    return nn.Sequential(*stem(8), ResBottleneckBlock(8, 16, 2, nn.BatchNorm2d, nn.ReLU, 4, 1.0, 0.25),
                         ResBottleneckBlock(16, 16, 1, nn.BatchNorm2d, nn.ReLU, 4, 1.0, 0.25),
                         *head(16))


def convnext():
    from torchvision.models.convnext import CNBlock, LayerNorm2d
    norm = partial(nn.LayerNorm, eps=1e-6)
    return nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6),
                         CNBlock(16, 1e-6, 0.0, norm), CNBlock(16, 1e-6, 0.0, norm),
                         nn.AdaptiveAvgPool2d(1), LayerNorm2d(16, eps=1e-6), nn.Flatten(),
                         nn.Linear(16, 10))


def vit():
    return torchvision.models.VisionTransformer(image_size=SIZE, patch_size=8, num_layers=2,
                                                num_heads=2, hidden_dim=32, mlp_dim=64,
                                                num_classes=10)


def seed_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 16 * 16, 10), nn.Softmax(dim=1))


FAMILIES = {
    "resnet_basic": resnet_basic, "resnet_bottleneck": resnet_bottleneck,
    "mobilenet_v2": mobilenet_v2, "mobilenet_v3": mobilenet_v3, "efficientnet": efficientnet,
    "squeezenet": squeezenet, "googlenet": googlenet, "densenet": densenet,
    "shufflenet": shufflenet, "regnet": regnet, "convnext": convnext, "vit": vit,
    "sequential": seed_net,
}


def randomise(model, seed):
    """Random weights (none left at zero, as ViT's head starts), and
    BatchNorm statistics far from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def export(name, model, out):
    x = torch.randn(2, 3, SIZE, SIZE)
    legacy = os.path.join(out, f"{name}.legacy.onnx")
    torch.onnx.export(model, (x,), legacy, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False, opset_version=17)
    dynamo = os.path.join(out, f"{name}.dynamo.onnx")
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, (x,), dynamo, input_names=["x"], output_names=["y"],
                      dynamic_shapes=({0: batch},), dynamo=True, external_data=True)
    if not os.path.exists(dynamo + ".data"):
        sys.exit(f"{dynamo}: the exporter wrote no external data")


def main(out):
    os.makedirs(out, exist_ok=True)
    for i, (name, make) in enumerate(FAMILIES.items()):
        torch.manual_seed(i)
        export(name, randomise(make(), i), out)
        print(name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "fixtures", "torch"))
