"""Parens: balanced strings of two bracket types (Dyck-2).

The nesting depth and the innermost open bracket are abstract state never
written in the tokens: what a probe can find only if the model computes it.
"""

from __future__ import annotations

from typing import Literal

import torch

from probekit.tasks.base import LabelSpec, PatchingPairs, Task, TaskBatch, generator, specials_then, split_id

OPEN = ("(", "[")
CLOSE = (")", "]")


class Parens(Task):
    """Random balanced Dyck-2 strings of fixed length after ``<bos>``.

    Labels (state after reading the token):
        ``depth``: nesting depth.
        ``top``: innermost open bracket: 0 none, 1 ``(``, 2 ``[``.

    Patching pairs: a prefix whose next token closes a bracket; the corrupt
    prefix has that bracket's opener swapped to the other type, so the
    answer is the matching close and ``wrong`` the other one.
    """

    name = "parens"
    description = "balanced brackets of two types (Dyck-2); nesting depth per token"
    label_specs = (
        LabelSpec(name="depth", kind="classification", description="nesting depth after the token"),
        LabelSpec(name="top", kind="classification", description="innermost open bracket after the token", classes=("none", "(", "[")),
    )
    control_key = "token_position"
    default_model = {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_ctx": 49}
    default_training = {"steps": 1500, "lr": 1e-3, "batch_size": 64}

    def __init__(self, length: int = 48, max_depth: int = 8, prefix_len: int = 24):
        if length % 2:
            raise ValueError("length must be even")
        self.length = length
        self.max_depth = max_depth
        self.prefix_len = prefix_len
        self.seq_len = length + 1

    def params(self) -> dict:
        return {"length": self.length, "max_depth": self.max_depth, "prefix_len": self.prefix_len}

    def vocab(self) -> list[str]:
        return specials_then([*OPEN, *CLOSE])

    def _tok(self, s: str) -> int:
        return self.vocab().index(s)

    def _strings(self, n: int, g: torch.Generator) -> torch.Tensor:
        """``n`` random balanced strings as token ids (without ``<bos>``)."""
        opens = [self._tok(c) for c in OPEN]
        closes = [self._tok(c) for c in CLOSE]
        coin = (torch.rand(n, self.length, generator=g) < 0.5).tolist()
        kind = torch.randint(0, 2, (n, self.length), generator=g).tolist()
        out = [[0] * self.length for _ in range(n)]
        for i in range(n):
            stack: list[int] = []
            row, ci, ki = out[i], coin[i], kind[i]
            for p in range(self.length):
                remaining = self.length - p
                must_close = len(stack) == remaining or len(stack) == self.max_depth
                if stack and (must_close or ci[p]):
                    row[p] = closes[stack.pop()]
                else:
                    stack.append(ki[p])
                    row[p] = opens[ki[p]]
        return torch.tensor(out, dtype=torch.long)

    def batch(self, n: int, seed: int, split: Literal["train", "test"] = "train") -> TaskBatch:
        g = generator(seed, split_id(split), 17)
        body = self._strings(n, g)
        tokens = torch.cat([torch.full((n, 1), self.bos), body], dim=1)
        depth, top = self.state(tokens)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        label_mask = mask.clone()
        label_mask[:, 0] = False
        return TaskBatch(tokens=tokens, mask=mask, labels={"depth": depth, "top": top},
                         label_mask={"depth": label_mask, "top": label_mask})

    def state(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth and innermost open bracket after each token of ``tokens`` ``[batch, pos]``."""
        o1, o2, c1, c2 = (self._tok(c) for c in (*OPEN, *CLOSE))
        depth, top = [], []
        for row in tokens.tolist():
            stack: list[int] = []
            d, tp = [], []
            for t in row:
                if t in (o1, o2):
                    stack.append(1 if t == o1 else 2)
                elif t in (c1, c2) and stack:
                    stack.pop()
                d.append(len(stack))
                tp.append(stack[-1] if stack else 0)
            depth.append(d)
            top.append(tp)
        return torch.tensor(depth, dtype=torch.long), torch.tensor(top, dtype=torch.long)

    def patching_pairs(self, n: int, seed: int) -> PatchingPairs:
        g = generator(seed, 7, 19)
        P = self.prefix_len
        opens = [self._tok(c) for c in OPEN]
        closes = [self._tok(c) for c in CLOSE]
        clean, corrupt, answers, wrong = [], [], [], []
        while len(clean) < n:
            body = self._strings(4 * n, g)
            for s in body:
                nxt = int(s[P - 1])  # token after a prefix of P tokens (plus <bos>)
                if nxt not in closes or len(clean) == n:
                    continue
                # find the opener that this close matches
                depth, j = 0, P - 2
                while j >= 0:
                    t = int(s[j])
                    depth += 1 if t in closes else -1
                    if depth < 0:
                        break
                    j -= 1
                prefix = torch.cat([torch.tensor([self.bos]), s[: P - 1]])
                other = prefix.clone()
                k = opens.index(int(s[j]))
                other[j + 1] = opens[1 - k]
                clean.append(prefix)
                corrupt.append(other)
                answers.append(closes[k])
                wrong.append(closes[1 - k])
        return PatchingPairs(clean=torch.stack(clean), corrupt=torch.stack(corrupt),
                             answers=torch.tensor(answers), wrong=torch.tensor(wrong))
