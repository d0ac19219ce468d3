"""Train a multiscale deep equilibrium classifier (MDEQ) on scikit-learn's digits, in one file.

The readable counterpart of `equilibria train`: the same pieces, an `eq.DEQ` solving for the
fixed point inside `equilibria.models.MDEQ`, Adam and a cosine schedule, in a plain PyTorch loop
to read top to bottom. Every few steps it prints the loss, the batch accuracy, the cell
evaluations (NFE) of the forward solve and of the backward (adjoint) solve, and the relative
residual the forward solve reached; at the end it evaluates on held-out digits.

    python examples/train_mdeq.py                       # about a minute on 2 CPU cores
    python examples/train_mdeq.py --steps 5 --log_every 1 --solver broyden

Any value of the configuration block below can be set with `--name value`.
"""

import ast
import math
import sys
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import equilibria as eq
from equilibria.models import MDEQ

# -----------------------------------------------------------------------------------------------
# configuration: plain values, each one overridable from the command line (--steps 5)
seed = 0
steps = 300  # optimizer steps, each on one random batch
batch_size = 32
test_fraction = 0.2  # share of the digits held out for the final evaluation
width = 16  # channels of each of the two resolution branches (8x8 and 4x4)
solver = "anderson"  # forward solver: any name in eq.SOLVERS
tol = 1e-3  # relative residual at which a forward solve stops
max_iter = 8  # forward iteration cap in training
eval_max_iter = 20  # and at test time, where solving further costs no gradient
backward_max_iter = 8  # cap of the adjoint solve that gives the implicit gradient
jacobian_gamma = 0.0  # weight of the Jacobian penalty (0: off), for better-behaved solves
lr = 1e-2  # peak learning rate
warmup_steps = 20
weight_decay = 0.0
grad_clip = 1.0
label_smoothing = 0.1
log_every = 25
device = "cuda" if torch.cuda.is_available() else "cpu"

settings = {k: v for k, v in globals().items() if k[0] != "_" and isinstance(v, (int, float, str))}
arguments = sys.argv[1:]
for flag, text in zip(arguments[::2], arguments[1::2] + [""], strict=False):
    name = flag.removeprefix("--")
    if not flag.startswith("--") or name not in settings:
        sys.exit(f"unknown setting {flag!r}; the settings are: {', '.join(settings)}")
    try:  # numbers as Python writes them; anything else is a string
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(settings[name], float) and type(value) is int:
        value = float(value)
    if type(value) is not type(settings[name]):
        sys.exit(f"--{name} expects a value like its default {settings[name]!r}, got {text!r}")
    globals()[name] = value
print(" ".join(f"{name}={globals()[name]}" for name in settings))
# -----------------------------------------------------------------------------------------------

torch.manual_seed(seed)

# data: 1797 grey 8x8 digits, scaled to [0, 1], split once, normalized with the training images
digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
labels = torch.tensor(digits.target, dtype=torch.int64)
order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
held_out = int(test_fraction * len(labels))
test_x, test_y = images[order[:held_out]], labels[order[:held_out]]
train_x, train_y = images[order[held_out:]], labels[order[held_out:]]
mean, std = train_x.mean(), train_x.std()
train_x, test_x = ((x - mean) / std for x in (train_x, test_x))
train_x, train_y, test_x, test_y = (t.to(device) for t in (train_x, train_y, test_x, test_y))
print(f"digits: {len(train_y)} training and {len(test_y)} held-out images")


def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of training images drawn at random (with replacement)."""
    index = torch.randint(len(train_y), (batch_size,), device=device)
    return train_x[index], train_y[index]


# model: stem -> eq.DEQ (the fixed point of the multiscale cell) -> classification head
model = MDEQ(
    in_channels=1,
    classes=10,
    channels=(width, width),
    solver=solver,
    tol=tol,
    max_iter=max_iter,
    eval_max_iter=eval_max_iter,
    backward=eq.Implicit(tol=tol, max_iter=backward_max_iter),
    jacobian_penalty=eq.JacobianPenalty(gamma=jacobian_gamma) if jacobian_gamma > 0 else None,
).to(device)
assert isinstance(model.deq, eq.DEQ)  # the layer whose statistics model.stats reports
parameters = sum(p.numel() for p in model.parameters())
print(f"MDEQ, {parameters} parameters; eq.DEQ({model.deq.extra_repr()})")

optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def get_lr(step: int) -> float:
    """Linear warm-up to `lr`, then cosine decay to zero at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# training
start = time.perf_counter()
for step in range(steps):
    for group in optimizer.param_groups:
        group["lr"] = get_lr(step)
    x, y = get_batch()
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    stats: eq.DEQStats = model.stats  # the forward solve of this batch
    total = loss if stats.auxiliary_loss is None else loss + stats.auxiliary_loss
    optimizer.zero_grad(set_to_none=True)
    total.backward()  # the implicit backward: one adjoint solve, counted in stats.backward_nfe
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if step % log_every == 0 or step == steps - 1:
        accuracy = (logits.argmax(1) == y).float().mean().item()
        print(
            f"step {step:4d} | loss {loss.item():.4f} | acc {accuracy:.3f} | "
            f"nfe {stats.forward_nfe}/{stats.backward_nfe} | "
            f"residual {stats.rel_residual.mean().item():.1e} | "
            f"{time.perf_counter() - start:.1f}s"
        )

# evaluation on the held-out digits, with the test-time iteration cap
model.eval()
correct, nfe, residual = 0, 0.0, 0.0
with torch.no_grad():
    for first in range(0, len(test_y), 512):
        x, y = test_x[first : first + 512], test_y[first : first + 512]
        correct += (model(x).argmax(1) == y).sum().item()
        nfe += model.stats.forward_nfe * len(y)
        residual += model.stats.rel_residual.sum().item()
print(
    f"test | acc {correct / len(test_y):.3f} | nfe {nfe / len(test_y):.1f} | "
    f"residual {residual / len(test_y):.1e} | {len(test_y)} images"
)
