"""Control tasks and selectivity (Hewitt & Liang 2019).

Hewitt & Liang, "Designing and Interpreting Probes with Control Tasks"
(EMNLP 2019): a control task gives every value of a *control key* (the word
type; here the token id, or the (token id, position) pair for tiny
vocabularies) a fixed random label drawn from the real label distribution. A
probe can only solve it by memorising types, so

    selectivity = task accuracy - control accuracy

says how much of the accuracy the representation, not the probe, supplies.
For regression the scores are R².
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from probekit.errors import ProbekitError

CONTROL_KEYS = ("token", "token_position")


def control_keys(token: Int[Tensor, " n"], position: Int[Tensor, " n"], key: str) -> Int[Tensor, " n"]:
    """One integer per row identifying its control-key value (``token`` or ``token_position``)."""
    if key == "token":
        return token.long()
    if key == "token_position":
        return token.long() * (int(position.max()) + 1) + position.long()
    raise ProbekitError(f"control key must be one of {', '.join(CONTROL_KEYS)}, got {key!r}")


def control_labels(keys: Int[Tensor, " n"], y: Tensor, *, seed: int = 0) -> Tensor:
    """A fixed random label per key value, drawn from the empirical distribution of ``y``.

    Args:
        keys: ``[n]`` control-key id per row.
        y: ``[n]`` real labels (class ids or regression values).
        seed: the draw; the same seed gives the same control task.

    Returns:
        ``[n]`` control labels, equal for rows that share a key.

    Example:
        >>> keys = torch.tensor([3, 5, 3, 7]); y = torch.tensor([0, 1, 1, 0])
        >>> c = control_labels(keys, y)
        >>> bool(c[0] == c[2])
        True
    """
    if len(keys) != len(y):
        raise ProbekitError(f"control keys have {len(keys)} rows but labels have {len(y)}")
    uniq, inv = torch.unique(keys, return_inverse=True)
    g = torch.Generator().manual_seed(seed)
    # a random row per key: its label is a draw from the empirical label distribution
    draw = torch.randint(0, len(y), (len(uniq),), generator=g)
    return y[draw][inv]


def control_has_one_class(y_control_train: Tensor) -> bool:
    """Whether control labels are one class on the training rows (a classification control is then skipped).

    That happens when the rows share one or a few control-key values, for example a
    sequence label read at the last token when every text ends with the same token:
    the control task then says nothing, and :func:`probes.sweep` and
    :func:`probes.train_probe` both skip it with a warning (``CONTROL_ONE_CLASS``)
    rather than blame the real label.
    """
    return len(torch.unique(y_control_train)) < 2


#: the warning logged when a control task is skipped for :func:`control_has_one_class`
CONTROL_ONE_CLASS = ("control task skipped: its labels have one class on the training rows "
                     "(%d distinct control-key values); no control score or selectivity")


def majority_rate(y_train: Tensor, y_test: Tensor) -> float:
    """Test accuracy of always predicting the training set's most frequent class (the chance line)."""
    vals, counts = torch.unique(y_train, return_counts=True)
    return float((y_test == vals[counts.argmax()]).float().mean())


def selectivity(task_score: Tensor, control_score: Tensor) -> Tensor:
    """Task score minus control score (Hewitt & Liang 2019)."""
    return task_score - control_score
