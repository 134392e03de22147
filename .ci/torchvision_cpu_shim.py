"""Makes PyPI's torchvision (a CUDA build) importable beside a CPU-only torch, as the vLLM test environment needs on a
machine without a GPU: its compiled operators cannot load there, and its import then stops at the two schemas it
registers fakes for without checking (torchvision::nms, torchvision::qnms). Right after torchvision.extension runs,
and only when its operators did not load, the two schemas are defined (no kernels: torchvision.ops still refuses;
the transforms the video processors use work). Loaded at start-up by a one-line .pth file; it imports nothing until
torchvision is imported."""

import importlib.abc
import importlib.util
import sys

SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        if not module._has_ops():
            import torch

            for name in ("nms", "qnms"):
                try:
                    torch.library.define(f"torchvision::{name}", SCHEMA)
                except RuntimeError:  # already defined
                    pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision.extension":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


sys.meta_path.insert(0, _Finder())
