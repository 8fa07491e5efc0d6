"""PyTorch reference numbers for `tests/pytorch_reference.rs`.

    pip install torch
    python tests/reference/pytorch_reference.py

prints Rust source: one `Case` constant per scenario below. That output is pasted verbatim into
`tests/pytorch_reference.rs` between the `BEGIN`/`END` marker lines, so the Rust tests need no
Python; re-running this script and diffing its output against that block re-verifies them.

Everything is float64 and deterministic (no RNG). With I = 3, H = 4, O = 2, B = 2, T = 5:

  * parameters: the k-th tensor in the order
        k = 0 weight_ih_l0 (G*H, I), 1 weight_hh_l0 (G*H, H), 2 bias_ih_l0 (G*H),
            3 bias_hh_l0 (G*H), 4 head.weight (O, H), 5 head.bias (O)
    (G = 1 for nn.RNN, 4 for nn.LSTM with gate blocks i, f, g, o, 3 for nn.GRU with gate
    blocks r, z, n), at row-major flat index j,
    holds  0.5 * cos(1.7 * j + 0.3 * k)
  * input x (B, T, I), batch-first:  x[b, t, i] = sin(0.9 * (b*T*I + t*I + i) + 0.2)
  * h0[b, h] = 0.5 * cos(0.7 * (b*H + h) + 0.1),  c0[b, h] = 0.5 * sin(1.3 * (b*H + h) + 0.4)
  * MSE targets (B, O): target[b, o] = 0.25 * (2*b - 3*o + 1)  (exact in f32)
  * class targets (B, T): CLASSES below, -1 = no target (ignore_index=-1)

Scenarios: {RNN (tanh), LSTM, GRU} x {head on the last step + MSE, head on every step +
cross-entropy}, and the ReLU RNN (nn.RNN(nonlinearity='relu')) with the head on the last step +
MSE (the script asserts that no ReLU pre-activation lies within 1e-3 of the kink at 0, where
the derivative would be ambiguous). The loss is `F.mse_loss(head(out[:, -1]), target)` or
`F.cross_entropy(head(out).reshape(-1, O), classes.reshape(-1), ignore_index=-1)`, both with
the default mean reduction.

Everything printed is in PyTorch's batch-first layout, flattened row-major:
  y     head output (B, T_out, O), T_out = 1 (last) or T (every)
  h_n   final hidden state (B, H);  c_n  final cell state (B, H), LSTM only
  grads dL/d(parameter), one per tensor above, same shapes
  dx    dL/dx (B, T, I);  dh0, dc0  dL/dh0, dL/dc0 (B, H)
  dh_norm[t] = mean over b of ||dL/dh_t[b, :]||_2, h_t the layer output at step t (t = 0..T-1),
               the TOTAL derivative (through the head and through step t+1)
  dc_norm[t]   the same for the LSTM cell state c_t
nn.RNN / nn.LSTM / nn.GRU compute everything except the probes. They do not expose h_t, c_t as
intermediate tensors (`out.retain_grad()` only sees the head's part of dL/dh_t), so the probes
come from a step-by-step unroll with nn.RNNCell / nn.LSTMCell / nn.GRUCell holding the same
weights; the script asserts that this unroll reproduces the layer's loss, outputs and every
gradient.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

I, H, O, B, T = 3, 4, 2, 2, 5
CLASSES = [[-1, 0, 1, 1, -1], [0, -1, 1, 0, 1]]  # (B, T)
NAMES = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "head.weight", "head.bias"]


def param_value(k, j):
    return 0.5 * math.cos(1.7 * j + 0.3 * k)


def make_x():
    return torch.tensor(
        [[[math.sin(0.9 * (b * T * I + t * I + i) + 0.2) for i in range(I)] for t in range(T)]
         for b in range(B)])


def make_h0():
    return torch.tensor([[0.5 * math.cos(0.7 * (b * H + h) + 0.1) for h in range(H)] for b in range(B)])


def make_c0():
    return torch.tensor([[0.5 * math.sin(1.3 * (b * H + h) + 0.4) for h in range(H)] for b in range(B)])


def make_target():
    return torch.tensor([[0.25 * (2 * b - 3 * o + 1) for o in range(O)] for b in range(B)])


def set_weights(tensors):
    with torch.no_grad():
        for k, p in enumerate(tensors):
            p.copy_(torch.tensor([param_value(k, j) for j in range(p.numel())]).view_as(p))


def loss_fn(head, out, readout, loss_kind):
    """out: (B, T, H) layer outputs. Returns (loss, y) with y (B, T_out, O)."""
    y = head(out[:, -1:, :]) if readout == "last" else head(out)
    if loss_kind == "mse":
        loss = F.mse_loss(y[:, -1, :], make_target())
    else:
        loss = F.cross_entropy(y.reshape(-1, O), torch.tensor(CLASSES).reshape(-1), ignore_index=-1)
    return loss, y


def layer(cell):
    """The recurrent layer: cell is "rnn", "rnn-relu", "lstm" or "gru"."""
    if cell in ("rnn", "rnn-relu"):
        return nn.RNN(I, H, nonlinearity="relu" if cell == "rnn-relu" else "tanh", batch_first=True)
    return {"lstm": nn.LSTM, "gru": nn.GRU}[cell](I, H, batch_first=True)


def step_cell(cell):
    """The single-step cell with the same parameters as `layer(cell)`."""
    if cell in ("rnn", "rnn-relu"):
        return nn.RNNCell(I, H, nonlinearity="relu" if cell == "rnn-relu" else "tanh")
    return {"lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell](I, H)


def reference(cell, readout, loss_kind):
    """nn.RNN / nn.LSTM / nn.GRU (batch_first) + nn.Linear head."""
    rnn = layer(cell)
    head = nn.Linear(H, O)
    params = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, head.weight, head.bias]
    set_weights(params)
    x = make_x().requires_grad_()
    h0 = make_h0().unsqueeze(0).requires_grad_()  # (num_layers = 1, B, H)
    c0 = make_c0().unsqueeze(0).requires_grad_()
    lstm = cell == "lstm"
    out, state = rnn(x, (h0, c0) if lstm else h0)
    loss, y = loss_fn(head, out, readout, loss_kind)
    loss.backward()
    h_n, c_n = state if lstm else (state, None)
    return dict(
        loss=loss.item(),
        y=y.detach(),
        h_n=h_n[0].detach(),
        c_n=None if c_n is None else c_n[0].detach(),
        grads=[p.grad for p in params],
        dx=x.grad,
        dh0=h0.grad[0],
        dc0=c0.grad[0] if lstm else None,
    )


def unrolled(cell, readout, loss_kind):
    """The same model stepped by hand with nn.RNNCell / nn.LSTMCell / nn.GRUCell, keeping every
    h_t, c_t."""
    step = step_cell(cell)
    lstm = cell == "lstm"
    head = nn.Linear(H, O)
    params = [step.weight_ih, step.weight_hh, step.bias_ih, step.bias_hh, head.weight, head.bias]
    set_weights(params)
    x = make_x().requires_grad_()
    h = make_h0().requires_grad_()
    c = make_c0().requires_grad_()
    h0, c0 = h, c
    hs, cs = [], []
    for t in range(T):
        if cell == "rnn-relu":
            with torch.no_grad():  # keep away from the kink of relu
                a = x[:, t] @ step.weight_ih.T + step.bias_ih + h @ step.weight_hh.T + step.bias_hh
                assert a.abs().min() > 1e-3, f"relu pre-activation {a.abs().min()} at the kink"
        if lstm:
            h, c = step(x[:, t], (h, c))
            c.retain_grad()
            cs.append(c)
        else:
            h = step(x[:, t], h)
        h.retain_grad()
        hs.append(h)
    out = torch.stack(hs, dim=1)  # (B, T, H)
    loss, y = loss_fn(head, out, readout, loss_kind)
    loss.backward()
    return dict(
        loss=loss.item(),
        y=y.detach(),
        h_n=h.detach(),
        c_n=c.detach() if lstm else None,
        grads=[p.grad for p in params],
        dx=x.grad,
        dh0=h0.grad,
        dc0=c0.grad if lstm else None,
        dh_norm=torch.tensor([ht.grad.norm(dim=1).mean().item() for ht in hs]),
        dc_norm=torch.tensor([ct.grad.norm(dim=1).mean().item() for ct in cs]) if lstm else None,
    )


def check_same(ref, unr):
    assert abs(ref["loss"] - unr["loss"]) <= 1e-13 * abs(ref["loss"]), (ref["loss"], unr["loss"])
    for key in ["y", "h_n", "c_n", "dx", "dh0", "dc0"]:
        if ref[key] is not None:
            assert torch.allclose(ref[key], unr[key], rtol=1e-12, atol=1e-14), key
    for name, a, b in zip(NAMES, ref["grads"], unr["grads"]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), name


def rust_slice(t, indent):
    """A tensor, flattened row-major, as a Rust `&[f64]` literal with shortest round-trip floats."""
    items = [repr(float(v)) for v in t.reshape(-1).tolist()]
    lines, line = [], ""
    for s in items:
        if line and len(indent) + len(line) + len(s) + 2 > 96:
            lines.append(line.rstrip())
            line = ""
        line += s + ", "
    lines.append(line.rstrip())
    return "&[\n" + "".join(f"{indent}    {ln}\n" for ln in lines) + f"{indent}]"


def option(t, indent):
    return "None" if t is None else f"Some({rust_slice(t, indent)})"


def emit(const, cell, readout, loss_kind):
    ref = reference(cell, readout, loss_kind)
    unr = unrolled(cell, readout, loss_kind)
    check_same(ref, unr)
    ind = "        "
    name = {"rnn": "RNN", "rnn-relu": "ReLU RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    print(f"/// {name}, head on the {readout} step, {'MSE' if loss_kind == 'mse' else 'cross-entropy'}.")
    print(f"pub const {const}: Case = Case {{")
    print(f"    loss: {ref['loss']!r},")
    print(f"    y: {rust_slice(ref['y'], '    ')},")
    print(f"    h_n: {rust_slice(ref['h_n'], '    ')},")
    print(f"    c_n: {option(ref['c_n'], '    ')},")
    print("    grads: [")
    for name, g in zip(NAMES, ref["grads"]):
        print(f"        ({name!r}, {rust_slice(g, ind)}),".replace("'", '"'))
    print("    ],")
    print(f"    dx: {rust_slice(ref['dx'], '    ')},")
    print(f"    dh0: {rust_slice(ref['dh0'], '    ')},")
    print(f"    dc0: {option(ref['dc0'], '    ')},")
    print(f"    dh_norm: {rust_slice(unr['dh_norm'], '    ')},")
    print(f"    dc_norm: {option(unr['dc_norm'], '    ')},")
    print("};")


print(f"// torch {torch.__version__.split('+')[0]}, float64; the step-by-step unroll matched "
      "nn.RNN / nn.LSTM to 1e-12.")
emit("RNN_LAST_MSE", "rnn", "last", "mse")
emit("LSTM_LAST_MSE", "lstm", "last", "mse")
emit("LSTM_EVERY_CE", "lstm", "every", "ce")
emit("RNN_EVERY_CE", "rnn", "every", "ce")
print("// GRU (gate blocks r, z, n) and the ReLU RNN; the unroll matched nn.GRU / nn.RNN to 1e-12.")
emit("GRU_LAST_MSE", "gru", "last", "mse")
emit("GRU_EVERY_CE", "gru", "every", "ce")
emit("RNN_RELU_LAST_MSE", "rnn-relu", "last", "mse")
