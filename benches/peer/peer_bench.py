"""The Python peer of `cargo xtask bench`: the same workloads in PyTorch + transformers + PEFT.

Runs one workload per process and prints one JSON object on stdout (so that each workload's
peak RSS is its own). The model is the GGUF the engine uses, dequantized to f32 by
transformers. Inputs are random token ids; the data does not change the speed.

    python peer_bench.py train      --gguf PATH --batch 8 --seq 128 [--reps 3 --steps 10 --warmup 2]
    python peer_bench.py train-keep --gguf PATH --batch 8 --seq 128   (lm_head on the last 33 positions)
    python peer_bench.py decode     --gguf PATH --batch 1             (HF generate, 128 + 32 new)
    python peer_bench.py score      --gguf PATH --batch 8             (all logits)
    python peer_bench.py score-keep --gguf PATH --batch 8             (logits_to_keep=33)
    python peer_bench.py matmul                                       (torch f32 2048^3)

A `-bf16` suffix (`train-bf16`, `train-keep-bf16`, `score-bf16`, `score-keep-bf16`) runs the
forward under `torch.autocast("cpu", dtype=torch.bfloat16)`: PyTorch's mixed-precision recipe,
whose matmuls run in bf16 (oneDNN, AVX512-BF16 where the CPU has it) with f32 weights and
optimizer state.

`--shared N` makes every row start with the same N ids (the engine runs such a prefix once;
transformers runs every row in full).

`decode` also reports `prompt_seconds`: generations of one new token (the prompt pass), timed
after the timed part, so that the decode steps' own speed can be told apart.

`--device cuda` runs the workload on CUDA device 0 (autocast then on CUDA too); its report adds
the GPU's peak allocated memory.
"""

import argparse
import json
import os
import time

import torch

THREADS = 2
LOSS_TOKENS = 32
PROMPT_TOKENS = 128
NEW_TOKENS = 32
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


DEVICE = torch.device("cpu")


def load(gguf):
    from transformers import AutoModelForCausalLM

    directory, name = os.path.split(os.path.abspath(gguf))
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32, attn_implementation="sdpa"
    )
    return model.to(DEVICE)


def autocast(enabled):
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=enabled)


def synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def random_ids(batch, seq, vocab, seed, shared=0):
    """Random ids; with `shared`, every row starts with the first row's first `shared` ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab, (batch, seq), generator=g)
    ids[:, :shared] = ids[0, :shared]
    return ids.to(DEVICE)


def time_reps(reps, steps, warmup, fn):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        synchronize()
        out.append(time.perf_counter() - start)
    return out


def train(args, keep):
    from peft import LoraConfig, get_peft_model

    started = time.perf_counter()
    model = load(args.gguf)
    config = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    model.train()
    load_s = time.perf_counter() - started
    vocab = model.config.vocab_size
    ids = random_ids(args.batch, args.seq, vocab, 11, args.shared)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : args.seq - LOSS_TOKENS] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []

    def step():
        with autocast(args.bf16):
            loss = train_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())

    def train_loss():
        if keep:
            out = model(input_ids=ids, attention_mask=mask, logits_to_keep=LOSS_TOKENS + 1)
            logits = out.logits[:, :-1, :].float()
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, -LOSS_TOKENS:].reshape(-1)
            )
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        return loss

    def grads(bf16):
        with autocast(bf16):
            loss = train_loss()
        loss.backward()
        out = [p.grad.detach().double().clone() for p in model.parameters() if p.requires_grad]
        optimizer.zero_grad(set_to_none=True)
        return loss.item(), out

    def fidelity():
        """The engine worker's measure: autocast against f32 on the current weights."""
        got_loss, got = grads(True)
        want_loss, want = grads(False)
        diff = sum(float(((g - w) ** 2).sum()) for g, w in zip(got, want)) ** 0.5
        norm = sum(float((w**2).sum()) for w in want) ** 0.5
        return abs(got_loss - want_loss) / abs(want_loss), diff / norm

    start = fidelity() if args.bf16 else None
    steps = args.steps or 10
    reset_peak_rss()
    times = time_reps(args.reps, steps, 2 if args.warmup is None else args.warmup, step)
    peak_rss = peak_rss_mib()
    bf16_vs_f32 = None
    if args.bf16:
        end = fidelity()
        bf16_vs_f32 = {
            "loss_rel_diff_start": start[0],
            "grad_rel_diff_start": start[1],
            "loss_rel_diff": end[0],
            "grad_rel_diff": end[1],
        }
    return {
        "workload": args.workload,
        "batch": args.batch,
        "seq": args.seq,
        "rep_seconds": times,
        "tokens_per_rep": steps * args.batch * args.seq,
        "steps_per_rep": steps,
        "load_seconds": load_s,
        "peak_rss_mib": peak_rss,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "bf16_vs_f32": bf16_vs_f32,
    }


def decode(args):
    started = time.perf_counter()
    model = load(args.gguf)
    model.eval()
    load_s = time.perf_counter() - started
    ids = random_ids(args.batch, PROMPT_TOKENS, model.config.vocab_size, 13, args.shared)
    mask = torch.ones_like(ids)
    produced = [0]

    def generate(new_tokens):
        with torch.inference_mode():
            return model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=1.0,
                pad_token_id=model.config.eos_token_id or 0,
            )

    def gen():
        out = generate(NEW_TOKENS)
        produced[0] = (out.shape[1] - PROMPT_TOKENS) * args.batch

    steps = args.steps or 3
    reset_peak_rss()
    times = time_reps(args.reps, steps, 1 if args.warmup is None else args.warmup, gen)
    # After the timed part: generations of one new token (the prompt pass).
    prompt_seconds = time_reps(args.reps, 1, 0, lambda: generate(1))
    return {
        "workload": "decode",
        "batch": args.batch,
        "seq": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "rep_seconds": times,
        "tokens_per_rep": steps * produced[0],
        "steps_per_rep": steps,
        "prompt_seconds": prompt_seconds,
        "load_seconds": load_s,
        "peak_rss_mib": peak_rss_mib(),
    }


def score(args, keep):
    started = time.perf_counter()
    model = load(args.gguf)
    model.eval()
    load_s = time.perf_counter() - started
    seq = PROMPT_TOKENS + NEW_TOKENS
    ids = random_ids(args.batch, seq, model.config.vocab_size, 17, args.shared)
    mask = torch.ones_like(ids)

    def sums(bf16):
        """Each row's summed log-likelihood of its scored tokens."""
        with torch.inference_mode(), autocast(bf16):
            if keep:
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=NEW_TOKENS + 1).logits
                logits = logits[:, :-1, :]
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits[:, PROMPT_TOKENS - 1 : -1, :]
            logp = torch.log_softmax(logits.float(), dim=-1)
            return logp.gather(-1, ids[:, PROMPT_TOKENS:].unsqueeze(-1)).sum(dim=(1, 2))

    def forward():
        return sums(args.bf16).sum().item()

    steps = args.steps or 5
    reset_peak_rss()
    times = time_reps(args.reps, steps, 2 if args.warmup is None else args.warmup, forward)
    peak_rss = peak_rss_mib()
    bf16_vs_f32 = None
    if args.bf16:
        # Untimed: the engine worker's measure, per scored token.
        got, want = sums(True).double(), sums(False).double()
        diffs = (got - want).abs() / NEW_TOKENS
        bf16_vs_f32 = {
            "max_abs_logprob_diff_per_token": float(diffs.max()),
            "mean_abs_logprob_diff_per_token": float(diffs.mean()),
            "mean_logprob_per_token": float(want.mean()) / NEW_TOKENS,
        }
    return {
        "workload": args.workload,
        "batch": args.batch,
        "seq": seq,
        "rep_seconds": times,
        "tokens_per_rep": steps * args.batch * seq,
        "steps_per_rep": steps,
        "load_seconds": load_s,
        "peak_rss_mib": peak_rss,
        "bf16_vs_f32": bf16_vs_f32,
    }


def matmul(args):
    n = 2048
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b
    gflops = []
    for _ in range(args.reps):
        start = time.perf_counter()
        calls = 0
        while calls == 0 or time.perf_counter() - start < 1.0:
            a @ b
            calls += 1
        gflops.append(2.0 * n * n * n * calls / (time.perf_counter() - start) / 1e9)
    return {"workload": "matmul", "m": n, "k": n, "n": n, "gflops": gflops}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "workload",
        choices=[
            "train", "train-keep", "train-bf16", "train-keep-bf16", "decode",
            "score", "score-keep", "score-bf16", "score-keep-bf16", "matmul",
        ],
    )
    parser.add_argument("--gguf")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--shared", type=int, default=0, help="leading ids every row shares")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(THREADS)
    if args.workload != "matmul" and not args.gguf:
        parser.error("--gguf is required")
    args.bf16 = args.workload.endswith("-bf16")
    base = args.workload.removesuffix("-bf16")
    if base in ("train", "train-keep"):
        report = train(args, base == "train-keep")
    elif args.workload == "decode":
        report = decode(args)
    elif base in ("score", "score-keep"):
        report = score(args, base == "score-keep")
    else:
        report = matmul(args)
    import importlib.metadata as md

    report["versions"] = {
        p: md.version(p) for p in ("torch", "transformers", "peft", "gguf")
    }
    report["threads"] = torch.get_num_threads()
    report["device"] = args.device
    if DEVICE.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(0)
        report["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(report))


if __name__ == "__main__":
    main()
