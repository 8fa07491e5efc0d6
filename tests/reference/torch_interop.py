"""Checkpoint interoperability between rnnlab and PyTorch, both directions.

Usage (from the repository root, after `cargo build --release` and `pip install torch safetensors`):
    python tests/reference/torch_interop.py

1. rnnlab trains a small LSTM, RNN, GRU and ReLU RNN (IRNN) briefly and saves checkpoints; PyTorch loads them with
   `load_state_dict` (strict), replays the batch rnnlab dumped, and compares the loss, every
   parameter gradient (`grads.safetensors`) and the per-timestep probe ‖∂L/∂h_t‖
   (`grad_norms.csv`) with autograd.
2. PyTorch saves a randomly initialised model with `safetensors.torch.save_file`; rnnlab probes
   it from that file, and the numbers are compared the same way. (Such a file has no rnnlab
   metadata: for nn.RNN(nonlinearity='relu') `--model rnn-relu` tells rnnlab which RNN it is.)
3. `python tests/reference/torch_interop.py --experiment plots/vanishing`: every checkpoint an
   experiment saved (`checkpoints/{model}_{init,trained}.safetensors`) is loaded into PyTorch,
   the saved probe batch replayed, and ‖∂L/∂h_t‖ by autograd compared with the experiment's
   `grad_vs_distance.csv` — the numbers on the chart.
Exits non-zero on any mismatch.
"""
import csv, os, subprocess, sys, tempfile
import torch
from safetensors.torch import load_file, save_file

RNNLAB = os.environ.get("RNNLAB", "target/release/rnnlab")


def layer(kind, I, H):
    """The recurrent layer of rnnlab's `--model kind`."""
    if kind in ("rnn", "rnn-relu"):
        return torch.nn.RNN(I, H, nonlinearity="relu" if kind == "rnn-relu" else "tanh", batch_first=True)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H, batch_first=True)


def step_cell(kind, I, H):
    """The single-step cell with the same parameters."""
    if kind in ("rnn", "rnn-relu"):
        return torch.nn.RNNCell(I, H, nonlinearity="relu" if kind == "rnn-relu" else "tanh")
    return {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[kind](I, H)


class Net(torch.nn.Module):
    """nn.RNN / nn.LSTM / nn.GRU with a linear head, with rnnlab's state-dict names."""

    def __init__(self, kind, I, H, O):
        super().__init__()
        self.rnn = layer(kind, I, H)
        self.head = torch.nn.Linear(H, O)

    # state dict keys: weight_ih_l0 ... head.weight head.bias
    def load_rnnlab(self, sd):
        self.rnn.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
        self.head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})

    def rnnlab_state_dict(self):
        sd = {k: v.detach().contiguous() for k, v in self.rnn.state_dict().items()}
        sd.update({"head." + k: v.detach().contiguous() for k, v in self.head.state_dict().items()})
        return sd


def torch_probe(kind, sd, x, y, I, H, O):
    """Loss, parameter gradients and ‖∂L/∂h_t‖ (mean over batch) by autograd, in float64."""
    net = Net(kind, I, H, O).double()
    net.load_rnnlab({k: v.double() for k, v in sd.items()})
    cell = step_cell(kind, I, H).double()
    cell.load_state_dict({k[:-3]: v for k, v in net.rnn.state_dict().items()})
    B, T, _ = x.shape
    h = torch.zeros(B, H, dtype=torch.float64)
    c = torch.zeros(B, H, dtype=torch.float64)
    hs = []
    for t in range(T):
        if kind == "lstm":
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        h.retain_grad()
        hs.append(h)
    loss = torch.nn.functional.mse_loss(net.head(hs[-1]), y)
    loss.backward()
    probe = [hh.grad.norm(dim=1).mean().item() for hh in hs]
    # parameter gradients through nn.LSTM itself (the unrolled cell is only for the probe)
    out, _ = net.rnn(x)
    l2 = torch.nn.functional.mse_loss(net.head(out[:, -1]), y)
    net.zero_grad()
    l2.backward()
    grads = {**{k: p.grad for k, p in net.rnn.named_parameters()}, **{"head." + k: p.grad for k, p in net.head.named_parameters()}}
    assert abs(l2.item() - loss.item()) < 1e-12
    return loss.item(), grads, probe


def compare(name, a, b, rtol):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    err = ((a - b).abs() / (b.abs().clamp_min(1e-3 * b.abs().max().item() + 1e-30))).max().item()
    status = "ok" if err <= rtol else "MISMATCH"
    print(f"  {name:<14} max rel err {err:.2e}  {status}")
    return err <= rtol


def check(kind, ckpt, workdir):
    out = os.path.join(workdir, f"probe-{kind}")
    batch = os.path.join(workdir, f"batch-{kind}.safetensors")
    subprocess.run([RNNLAB, "probe", "--task", "adding", "--model", kind, "--checkpoint", ckpt, "--seq-len", "30", "--batch", "32",
                    "--dump-batch", batch, "--out", out], check=True, stdout=subprocess.DEVNULL)
    sd = load_file(ckpt)
    b = load_file(batch)
    x, y = b["x"].double(), b["y"].double()
    I, H, O = sd["weight_ih_l0"].shape[1], sd["weight_hh_l0"].shape[1], sd["head.weight"].shape[0]
    loss, grads, probe = torch_probe(kind, sd, x, y, I, H, O)
    ours = load_file(os.path.join(out, "grads.safetensors"))
    with open(os.path.join(out, "grad_norms.csv")) as f:
        dh = [float(r["dh_norm"]) for r in csv.DictReader(f)]
    print(f"{kind}: torch loss {loss:.9g}")
    ok = all(compare(k, ours[k], grads[k], 1e-5) for k in grads)   # rnnlab writes f32 gradients
    ok &= compare("dh_norm", dh, probe, 1e-9)                       # CSV keeps f64 digits
    return ok


def check_experiment(folder):
    """The probe rows of an experiment's grad_vs_distance.csv against autograd on its checkpoints."""
    b = load_file(os.path.join(folder, "checkpoints", "probe_batch.safetensors"))
    x, y = b["x"].double(), b["y"].double()
    with open(os.path.join(folder, "grad_vs_distance.csv")) as f:
        rows = list(csv.DictReader(f))
    ok = True
    for panel in ("init", "trained"):
        for kind in ("rnn", "lstm", "gru"):
            ckpt = os.path.join(folder, "checkpoints", f"{kind}_{panel}.safetensors")
            if not os.path.exists(ckpt):
                continue
            sd = load_file(ckpt)
            I, H, O = sd["weight_ih_l0"].shape[1], sd["weight_hh_l0"].shape[1], sd["head.weight"].shape[0]
            _, _, probe = torch_probe(kind, sd, x, y, I, H, O)
            charted = sorted(((int(r["t"]), float(r["dh_norm"])) for r in rows
                              if r["panel"] == panel and r["model"] == kind))
            print(f"{kind} {panel}: ‖∂L/∂h_t‖ at the loss {probe[-1]:.4e}, at t = 0 {probe[0]:.4e} (torch)")
            ok &= compare("dh_norm", [v for _, v in charted], probe, 1e-9)
    return ok


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--experiment":
        ok = check_experiment(sys.argv[2])
        print("all match" if ok else "MISMATCH")
        sys.exit(0 if ok else 1)
    ok = True
    with tempfile.TemporaryDirectory() as d:
        # (`--model irnn` trains the ReLU RNN from the IRNN initialisation; its checkpoint says rnn-relu)
        for kind, train_as in [("lstm", "lstm"), ("rnn", "rnn"), ("gru", "gru"), ("rnn-relu", "irnn")]:
            ckpt = os.path.join(d, f"{kind}.safetensors")
            subprocess.run([RNNLAB, "train", "--task", "adding", "--model", train_as, "--seq-len", "30", "--hidden", "16",
                            "--steps", "50", "--out", os.path.join(d, f"train-{kind}"), "--save", ckpt],
                           check=True, stdout=subprocess.DEVNULL)
            # 1. rnnlab -> PyTorch: strict load_state_dict into nn.LSTM/nn.RNN/nn.GRU + nn.Linear
            net = Net(kind, 2, 16, 1)
            net.load_rnnlab(load_file(ckpt))
            print(f"rnnlab {kind} checkpoint loaded into torch.nn.{type(net.rnn).__name__} + torch.nn.Linear")
            ok &= check(kind, ckpt, d)
            # 2. PyTorch -> rnnlab: a fresh torch model saved with safetensors
            torch.manual_seed(1)
            mine = os.path.join(d, f"torch-{kind}.safetensors")
            save_file(Net(kind, 2, 12, 1).rnnlab_state_dict(), mine)
            print(f"torch {kind} state dict saved; rnnlab probes it:")
            ok &= check(kind, mine, d)
    print("all match" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
