"""Gridworld: random legal moves on a small grid — a world model at toy cost.

As in Othello-GPT (Li et al. 2023), the agent's position is never written in
the tokens after the start; a model that predicts only legal moves must track
it, and a probe can ask where it is encoded.
"""

from __future__ import annotations

from typing import Literal

import torch

from probekit.tasks.base import LabelSpec, PatchingPairs, Task, TaskBatch, generator, specials_then, split_id

MOVES = {"N": (0, 1), "S": (0, -1), "E": (1, 0), "W": (-1, 0)}


class Gridworld(Task):
    """``<bos>``, a start cell ``sK``, then random legal moves ``N S E W`` on a ``size`` × ``size`` grid.

    Labels (position after the token; undefined at ``<bos>``):
        ``x``, ``y``: column and row; ``cell``: ``y * size + x``.

    Patching pairs: same moves from two start cells, chosen so that a move
    legal at the clean end (the answer) is illegal at the corrupt end and
    vice versa (``wrong``).
    """

    name = "gridworld"
    description = "random legal moves on a grid; the agent's (x, y) per step"
    control_key = "token_position"
    default_model = {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_ctx": 32}
    default_training = {"steps": 1500, "lr": 1e-3, "batch_size": 64}

    def __init__(self, size: int = 5, seq_len: int = 32, prefix_len: int = 12):
        self.size = size
        self.seq_len = seq_len
        self.prefix_len = prefix_len
        classes = tuple(str(i) for i in range(size))
        self.label_specs = (
            LabelSpec(name="x", kind="classification", description="agent's column after the token", classes=classes),
            LabelSpec(name="y", kind="classification", description="agent's row after the token", classes=classes),
            LabelSpec(name="cell", kind="classification", description="agent's cell y*size+x after the token"),
        )

    def params(self) -> dict:
        return {"size": self.size, "seq_len": self.seq_len, "prefix_len": self.prefix_len}

    def vocab(self) -> list[str]:
        return specials_then([*MOVES, *(f"s{i}" for i in range(self.size**2))])

    def _legal(self, x: int, y: int) -> list[int]:
        return [i for i, (dx, dy) in enumerate(MOVES.values()) if 0 <= x + dx < self.size and 0 <= y + dy < self.size]

    def _walks(self, n: int, length: int, g: torch.Generator, starts: torch.Tensor | None = None):
        """Random walks: (tokens without <bos>, xs, ys), each ``[n, length]`` (start token first)."""
        S = self.size
        if starts is None:
            starts = torch.randint(0, S * S, (n,), generator=g)
        u = torch.rand(n, length, generator=g).tolist()
        deltas = list(MOVES.values())
        toks, xs, ys = [], [], []
        for i in range(n):
            c = int(starts[i])
            x, y = c % S, c // S
            row, rx, ry = [3 + 4 + c], [x], [y]
            for p in range(1, length):
                legal = self._legal(x, y)
                m = legal[int(u[i][p] * len(legal))]
                x, y = x + deltas[m][0], y + deltas[m][1]
                row.append(3 + m)
                rx.append(x)
                ry.append(y)
            toks.append(row)
            xs.append(rx)
            ys.append(ry)
        return torch.tensor(toks), torch.tensor(xs), torch.tensor(ys)

    def batch(self, n: int, seed: int, split: Literal["train", "test"] = "train") -> TaskBatch:
        g = generator(seed, split_id(split), 23)
        toks, xs, ys = self._walks(n, self.seq_len - 1, g)
        bos = torch.full((n, 1), self.bos)
        zero = torch.zeros(n, 1, dtype=torch.long)
        tokens = torch.cat([bos, toks], 1)
        x = torch.cat([zero, xs], 1)
        y = torch.cat([zero, ys], 1)
        mask = torch.ones_like(tokens, dtype=torch.bool)
        lm = mask.clone()
        lm[:, 0] = False
        return TaskBatch(tokens=tokens, mask=mask, labels={"x": x, "y": y, "cell": y * self.size + x},
                         label_mask={"x": lm, "y": lm, "cell": lm})

    def position(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay ``tokens`` ``[batch, pos]`` (with ``<bos>``) and return the final (x, y)."""
        deltas = list(MOVES.values())
        xs, ys = [], []
        for row in tokens.tolist():
            c = row[1] - 7
            x, y = c % self.size, c // self.size
            for t in row[2:]:
                dx, dy = deltas[t - 3]
                x, y = x + dx, y + dy
            xs.append(x)
            ys.append(y)
        return torch.tensor(xs), torch.tensor(ys)

    def patching_pairs(self, n: int, seed: int) -> PatchingPairs:
        g = generator(seed, 7, 29)
        S, P = self.size, self.prefix_len
        clean, corrupt, answers, wrong = [], [], [], []
        deltas = list(MOVES.values())
        while len(clean) < n:
            toks, xs, ys = self._walks(4 * n, P, g)
            others = torch.randint(0, S * S, (4 * n,), generator=g).tolist()
            for i in range(4 * n):
                if len(clean) == n:
                    break
                # replay the same moves from another start; every move must stay legal
                c = others[i]
                x, y = c % S, c // S
                ok = True
                for t in toks[i, 1:].tolist():
                    dx, dy = deltas[t - 3]
                    x, y = x + dx, y + dy
                    ok = ok and 0 <= x < S and 0 <= y < S
                if not ok:
                    continue
                a = set(self._legal(int(xs[i, -1]), int(ys[i, -1])))
                b = set(self._legal(x, y))
                if not (a - b) or not (b - a):
                    continue
                row = torch.cat([torch.tensor([self.bos]), toks[i]])
                other = row.clone()
                other[1] = 3 + 4 + c
                clean.append(row)
                corrupt.append(other)
                answers.append(3 + min(a - b))
                wrong.append(3 + min(b - a))
        return PatchingPairs(clean=torch.stack(clean), corrupt=torch.stack(corrupt),
                             answers=torch.tensor(answers), wrong=torch.tensor(wrong))
