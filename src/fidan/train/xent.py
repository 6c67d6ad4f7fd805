"""The output head and its cross-entropy in one pass, in row chunks (the training loss on a CPU).

``F.cross_entropy(h @ W.T, y)`` on a small model spends as long on the vocabulary-wide softmax as
on the head's matmuls, none of it matmul FLOPs: the forward writes the ``[tokens, vocab]``
log-probabilities, and the backward zero-fills a tensor of that size for ``nll_loss``'s one-hot
gradient, scatters into it and runs ``log_softmax``'s backward over it. ``head_cross_entropy``
computes the same mean loss and the same gradients chunk by chunk of rows: each chunk's logits
(``h_c @ W.T``), their ``log_softmax`` (the same kernel, row by row, as the unfused path), the
target log-probabilities, then at once, while the chunk is still in the cache, its gradient
``softmax - onehot`` and its products with ``W`` (for ``h``) and ``h_c`` (accumulated for ``W``).
The backward only scales those two by the incoming gradient over the token count. Nothing of size
``[tokens, vocab]`` outlives a chunk.
"""
from __future__ import annotations

import torch


def chunk_rows(vocab: int) -> int:
    """Rows per chunk: about 1 MiB of float32 logits (128 rows at a 2,048-token vocabulary)."""
    return max(16, (1 << 18) // max(1, vocab))


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        n = h.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        picked = h.new_zeros(())
        for s in range(0, n, chunk):
            hc, yc = h[s:s + chunk], target[s:s + chunk]
            logp = torch.log_softmax(hc @ weight.T, dim=1)
            picked += logp.gather(1, yc[:, None]).sum()
            if need_h or need_w:
                probs = logp.exp_()
                probs[torch.arange(len(yc), device=yc.device), yc] -= 1   # softmax - onehot
                if need_h:
                    torch.mm(probs, weight, out=grad_h[s:s + chunk])
                if need_w:
                    grad_w.addmm_(probs.T, hc)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n = n
        return -picked / n

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad / ctx.n
        return (grad_h * scale if grad_h is not None else None,
                grad_w * scale if grad_w is not None else None, None, None)


def head_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                       chunk: int = 0) -> torch.Tensor:
    """Mean cross-entropy of ``h @ weight.T`` (``h``: ``[tokens, d]``, ``weight``: ``[vocab, d]``)
    against ``target`` (``[tokens]``), equal to ``F.cross_entropy`` of those logits, gradients
    included (to float32 rounding); every target must be a real class (no ``ignore_index``)."""
    return _HeadCrossEntropy.apply(h, weight, target, chunk or chunk_rows(weight.shape[0]))
