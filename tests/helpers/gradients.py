"""Two forwards of one model that must agree: their logits give the same gradients."""

import torch


def assert_same_gradients(model, got: torch.Tensor, expected: torch.Tensor, seed: int = 0) -> None:
    """The gradients of a fixed random weighting of log_softmax(logits), through `got` and through `expected`, agree
    for every trainable parameter of `model` (float rounding only: an absolute 1e-4 on gradients that reach ~16 in
    the tiny models is a relative 1e-5)."""
    weights = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed))
    grads = []
    for logits in (got, expected):
        model.zero_grad()
        (logits.log_softmax(-1) * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[1].items():
        torch.testing.assert_close(grads[0][name], grad, atol=1e-4, rtol=1e-4, msg=name)
