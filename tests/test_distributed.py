"""Training across processes (train/distributed.py): sharding, the global-token normalisation, and real runs.

The fast tests check the arithmetic that makes N processes equal one: each process's share of a
group, divided by the whole group's labelled tokens, sums to the whole group's gradient. The slow
ones start real processes with gloo on this CPU: ``tuneforge finetune --nproc 2`` ends with the
adapter of one process over the same global batches (within 1e-5), and a 2-process run whose rank 1
is SIGKILLed mid-step stops entirely and, resumed with ``tuneforge resume --nproc 2``, ends with the
uninterrupted 2-process run's adapter (dropout on: every rank's RNG state is in the checkpoints).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from helpers import read_events
from tuneforge.cli.main import _without_nproc
from tuneforge.monitor.events import DiscardedEvents
from tuneforge.train.distributed import SINGLE, World, shard_group, world_from_env

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_shard_group_gives_each_process_a_disjoint_share_whose_union_is_the_group() -> None:
    group = [[5, 1, 7, 3], [2, 9, 4], [8]]
    shares = [shard_group(group, World(rank, 2)) for rank in range(2)]
    assert shares[0] == [[5, 7], [2, 4], [8]]
    assert shares[1] == [[1, 3], [9]]  # rank 1 has nothing of the last batch: no empty pass
    flat = [sorted(i for share in shares for batch in share for i in batch)]
    assert flat == [sorted(i for batch in group for i in batch)]
    assert shard_group(group, SINGLE) == group


def test_world_comes_from_the_launchers_environment() -> None:
    assert world_from_env({}) == SINGLE
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    assert world_from_env({"RANK": "0", "WORLD_SIZE": "1"}) == SINGLE
    assert world_from_env({"WORLD_SIZE": "x"}) == SINGLE
    assert World(1, 2).active and not World(1, 2).is_main


def test_without_nproc_drops_only_the_flag_and_its_value() -> None:
    argv = ["finetune", "--nproc", "2", "--data", "x.jsonl", "--nproc=3", "--npro", "4", "--epochs", "1"]
    assert _without_nproc(argv) == ["finetune", "--data", "x.jsonl", "--epochs", "1"]


def test_discarded_events_write_nothing_but_return_the_event(tmp_path: Path) -> None:
    events = DiscardedEvents()
    assert events.emit("train.step", step=1, loss=float("nan"))["loss"] == "nan"
    assert events.emit("x")["seq"] == 1


def test_shares_divided_by_the_global_tokens_sum_to_the_whole_groups_gradient(tiny_model_dir: Path, tiny_tokenizer) -> None:
    from helpers import make_rows
    from tuneforge.config import make_config
    from tuneforge.data.examples import TrainingExample
    from tuneforge.data.tokenize import encode_examples
    from tuneforge.model.methods import get_method, make_trainable
    from tuneforge.train.accumulation import accumulate_gradients
    from tuneforge.train.objectives import run_loss_sums

    config = make_config({"data": "unused.jsonl", "model": str(tiny_model_dir), "method": "full", "batch_size": 4})
    encoded = encode_examples(tiny_tokenizer, [TrainingExample(**row) for row in make_rows(7)], 128).items
    group = [[0, 1, 2, 3], [4, 5, 6]]  # two batches of one accumulation group
    method = get_method("full")
    model = make_trainable(method, method.load_base(tiny_model_dir, "cpu", config, "fp32"), config)  # packed attention
    loss_sums = run_loss_sums(config)

    def gradients(shares: list[list[int]], total: int | None) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        accumulate_gradients(model, [[encoded[i] for i in batch] for batch in shares], config, loss_sums, "fp32",
                             tiny_tokenizer.pad_token_id, "cpu", total_tokens=total)
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    whole = gradients(group, None)
    total = sum(encoded[i].trained_tokens for batch in group for i in batch)
    parts = [gradients(shard_group(group, World(rank, 3)), total) for rank in range(3)]
    for name, grad in whole.items():
        summed = sum(part[name] for part in parts if name in part)
        assert torch.allclose(summed, grad, atol=1e-6, rtol=1e-4), name
    divided_locally = gradients(shard_group(group, World(0, 3)), None)  # what dividing by one's own tokens would give
    name = next(iter(whole))
    assert not torch.allclose(divided_locally[name], parts[0][name], atol=1e-6)


# ---------------------------------------------------------------------------------------------- real processes

RUN = dict(epochs=3, batch_size=4, max_length=128, max_new_tokens=8, evaluate_base=False, test_split=0.0,
           validation_split=0.1, gradient_accumulation_steps=2, learning_rate=5e-3, saving_strategy="steps",
           save_steps=3, save_total_limit=2, evaluation_strategy="steps", eval_steps=4, seed=11, final_weights="last",
           estimate_steps=0, baselines=False, forgetting_check=False,
           precision="fp32")  # the arithmetic of N processes vs one; auto would be bf16 on AVX512-BF16/AMX CPUs
TOTAL_STEPS = 15  # 36 training rows / batch 4 = 9 batches -> 5 steps per epoch, 3 epochs


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
            "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _flags(values: dict[str, Any]) -> list[str]:
    flags = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneforge.cli.main", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import make_rows, write_jsonl

    return write_jsonl(tmp_path_factory.mktemp("ddp-data") / "colors.jsonl", make_rows())


def _finetune(tiny_model_dir: Path, data: Path, output: Path, *extra: str, **fields: Any) -> subprocess.CompletedProcess:
    values = {**RUN, **fields}
    return _cli("finetune", "--data", str(data), "--model", str(tiny_model_dir), "--output", str(output), "--json",
                *_flags(values), *extra)


@pytest.mark.slow
def test_two_gloo_processes_train_the_adapter_of_one_process(tiny_model_dir: Path, dataset: Path, tmp_path: Path) -> None:
    # Float rounding differs (other pass shapes, another summation order) and AdamW amplifies it in the
    # near-zero gradients; at 5e-3 the difference after 15 steps was 1.6e-5, at this rate it stays below 1e-5.
    rate = {"learning_rate": 1e-3}
    one = _finetune(tiny_model_dir, dataset, tmp_path / "one", **rate)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _finetune(tiny_model_dir, dataset, tmp_path / "two", "--nproc", "2", **rate)
    assert two.returncode == 0, two.stderr[-3000:]
    difference = _max_difference(_adapter(tmp_path / "one"), _adapter(tmp_path / "two"))
    print(f"max |adapter(1 process) - adapter(2 processes)| = {difference:.3g}")
    assert difference <= 1e-5
    started = [e for e in read_events(tmp_path / "two") if e["type"] == "train.started"][-1]
    assert started["processes"] == 2 and len(set(started["process_ids"])) == 2
    losses = {name: {e["step"]: e["loss"] for e in read_events(tmp_path / name) if e["type"] == "train.step"}
              for name in ("one", "two")}
    assert sorted(losses["two"]) == list(range(1, TOTAL_STEPS + 1))
    assert all(abs(losses["one"][s] - losses["two"][s]) < 1e-5 for s in losses["one"])
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["status"] == "succeeded" and results["train"]["steps"] == TOTAL_STEPS
    assert (tmp_path / "two" / "checkpoints" / "step-000015").is_dir() is False  # no checkpoint at the last step
    assert list((tmp_path / "two" / "checkpoints").glob("step-*/rng-rank1.pt"))  # each rank's generators saved


# Rank 1 SIGKILLs itself in the middle of a step (between two forward passes): rank 0 is then waiting for it
# in the gradient all_reduce. The kill point is counted in calls of the loop's one loss call.
KILLED_CHILD = r"""
import os, signal, sys
from tuneforge.train import accumulation
calls, kill_after = {"n": 0}, int(os.environ["KILL_AFTER_PASSES"])
real = accumulation.training_loss_sums
def counted(loss_sums, model, batch):
    calls["n"] += 1
    if os.environ.get("RANK") == "1" and calls["n"] > kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(loss_sums, model, batch)
accumulation.training_loss_sums = counted
from tuneforge.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_resume_with_two_processes_is_exact(tiny_model_dir: Path, dataset: Path,
                                                                            tmp_path: Path) -> None:
    dropout = {"lora_dropout": 0.1}  # randomness in training: the ranks' RNG states must come back exactly
    whole = _finetune(tiny_model_dir, dataset, tmp_path / "whole", "--nproc", "2", **dropout)
    assert whole.returncode == 0, whole.stderr[-3000:]

    script = tmp_path / "killed_child.py"
    script.write_text(KILLED_CHILD)
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
               "--max-restarts", "0", str(script), "finetune", "--data", str(dataset), "--model", str(tiny_model_dir),
               "--output", str(killed), *_flags({**RUN, **dropout})]
    # A rank makes one pass per batch share: 2 a step, 9 an epoch; rank 1 dies in its 17th pass, the second of step 9
    # (the newest checkpoint is step 6).
    run = subprocess.run(command, capture_output=True, text=True, env={**_env(), "KILL_AFTER_PASSES": "16"}, timeout=300)
    assert run.returncode != 0, "the run went on after one of its processes died"
    assert "SIGKILL" in run.stderr or "-9" in run.stderr, run.stderr[-3000:]
    events = read_events(killed)
    for pid in [e for e in events if e["type"] == "train.started"][-1]["process_ids"]:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    steps = [e["step"] for e in events if e["type"] == "train.step"]
    assert max(steps) < TOTAL_STEPS and not (killed / "adapter").exists()
    assert any(e["type"] == "checkpoint.saved" and e["step"] == 6 for e in events)

    resumed = _cli("resume", str(killed), "--nproc", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [e for e in read_events(killed) if e["type"] == "train.resumed"][-1]["step"] == 6
    assert _max_difference(_adapter(tmp_path / "whole"), _adapter(killed)) <= 1e-6
    assert json.loads((killed / "results.json").read_text())["status"] == "succeeded"


@pytest.mark.slow
def test_ctrl_c_under_nproc_saves_a_checkpoint_and_the_run_resumes_in_one_process(tiny_model_dir: Path, dataset: Path,
                                                                                  tmp_path: Path) -> None:
    import signal
    import time

    run_dir = tmp_path / "stopped"
    command = [sys.executable, "-m", "tuneforge.cli.main", "finetune", "--data", str(dataset), "--model",
               str(tiny_model_dir), "--output", str(run_dir), "--nproc", "2",
               *_flags({**RUN, "epochs": 7, "early_stopping": False})]  # every planned step, to count them after resuming
    parent = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(e["type"] == "train.step" for e in _events_so_far(run_dir)):
        time.sleep(0.5)
    parent.send_signal(signal.SIGINT)  # what Ctrl-C sends to the command the user started
    _, stderr = parent.communicate(timeout=240)
    assert parent.returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    stopped = [e for e in read_events(run_dir) if e["type"] == "train.interrupted"][-1]
    assert stopped["checkpoint"] == f"checkpoints/step-{stopped['step']:06d}"
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"

    resumed = _cli("resume", str(run_dir), "--json")  # one process now: the global batches are the same
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [e for e in read_events(run_dir) if e["type"] == "train.resumed"][-1]["step"] == stopped["step"]
    assert json.loads((run_dir / "results.json").read_text())["train"]["steps"] == 35  # 5 steps an epoch


def _events_so_far(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return read_events(run_dir)
    except (OSError, ValueError):
        return []


# ---------------------------------------------------------------------------------------------- FSDP

FULL = {"method": "full", "learning_rate": 1e-3}  # FSDP is for the whole model; 1e-3: see the DDP test's note on AdamW


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_fsdp_in_one_process_is_refused_with_one_message(capsys: pytest.CaptureFixture, tiny_model_dir: Path,
                                                         dataset: Path, tmp_path: Path) -> None:
    from tuneforge.cli.main import main

    code = main(["finetune", "--data", str(dataset), "--model", str(tiny_model_dir), "--output", str(tmp_path / "one"),
                 "--method", "full", "--distributed", "fsdp"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "fsdp shards the model over several processes" in err and "--nproc" in err
    assert not (tmp_path / "one").exists()  # refused before the run directory exists


def test_fsdp_with_a_method_it_does_not_train_is_refused_naming_those_it_does(capsys: pytest.CaptureFixture,
                                                                             dataset: Path, tmp_path: Path) -> None:
    from tuneforge.cli.main import main

    code = main(["finetune", "--data", str(dataset), "--output", str(tmp_path / "q"), "--method", "qlora",
                 "--distributed", "fsdp", "--nproc", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "fsdp trains methods full, lora, not 'qlora'" in err and "--distributed ddp" in err


# One accumulation group whose last batch has one item: rank 1 has no share of it and makes a zero-weight pass.
FSDP_GROUP = [[0, 1, 2, 3], [4, 5], [6]]


def group_gradients(model_dir: Path, method_name: str, world: World) -> dict[str, torch.Tensor]:
    """The gradients of FSDP_GROUP (full tensors): one process, or this process's share under FSDP in ``world``."""
    from transformers import AutoTokenizer

    from helpers import make_rows
    from tuneforge.config import make_config
    from tuneforge.data.examples import TrainingExample
    from tuneforge.data.tokenize import encode_examples
    from tuneforge.model.methods import get_method, make_trainable
    from tuneforge.train import fsdp
    from tuneforge.train.accumulation import accumulate_gradients
    from tuneforge.train.objectives import run_loss_sums

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = make_config({"data": "unused.jsonl", "model": str(model_dir), "method": method_name, "batch_size": 4})
    encoded = encode_examples(tokenizer, [TrainingExample(**row) for row in make_rows(7)], 128).items
    method = get_method(method_name)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same fresh adapter everywhere
        model = make_trainable(method, method.load_base(model_dir, "cpu", config, "fp32"), config)
    loss_sums, filler = run_loss_sums(config), None
    if world.active:
        loss_sums, filler = fsdp.sharded_loss_sums(fsdp.shard(model, loss_sums)), [encoded[0]]
    total = sum(encoded[i].trained_tokens for batch in FSDP_GROUP for i in batch)
    share = [[encoded[i] for i in batch] for batch in shard_group(FSDP_GROUP, world)]
    accumulate_gradients(model, share, config, loss_sums, "fp32", tokenizer.pad_token_id, "cpu", total_tokens=total,
                         filler=filler)
    return {name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).detach().clone()
            for name, p in model.named_parameters() if p.grad is not None}


FSDP_CHILD = r"""
import os, sys
import torch, torch.distributed as dist
from pathlib import Path
rank, store, out, model_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
from test_distributed import group_gradients
from tuneforge.train.distributed import World
found = {name: group_gradients(model_dir, name, World(rank, 2)) for name in ("full", "lora")}
if rank == 0:
    torch.save(found, out)
dist.destroy_process_group()
"""


def test_fsdp_gradients_of_two_processes_equal_one_processes_full_and_lora(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "fsdp_child.py"
    script.write_text(FSDP_CHILD)
    env = {**_env(), "OMP_NUM_THREADS": str(torch.get_num_threads()),  # the same reductions as this process's
           "PYTHONPATH": os.pathsep.join([SRC, str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "gradients.pt"
    children = [subprocess.Popen([sys.executable, str(script), str(rank), str(tmp_path / "store"), str(out),
                                  str(tiny_model_dir)], env=env, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    wholes = {name: group_gradients(tiny_model_dir, name, SINGLE) for name in ("full", "lora")}  # while they run
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert all(child.returncode == 0 for child in children), errors[0][-3000:] + errors[1][-3000:]
    sharded = torch.load(out, weights_only=True)
    for method_name, whole in wholes.items():
        assert whole.keys() == sharded[method_name].keys()
        difference = _max_difference(whole, sharded[method_name])
        print(f"{method_name}: max |gradient(1 process) - gradient(2 FSDP processes)| = {difference:.3g}")
        assert difference <= 1e-6, method_name
        if method_name == "full":  # the tied embeddings/head, read by the fused loss outside any module's forward
            assert float(sharded["full"]["model.embed_tokens.weight"].abs().max()) > 1e-3


@pytest.fixture(scope="module")
def fsdp_run(tiny_model_dir: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-process FSDP full fine-tune (RUN's 15 steps)."""
    run_dir = tmp_path_factory.mktemp("fsdp") / "two"
    two = _finetune(tiny_model_dir, dataset, run_dir, "--nproc", "2", "--distributed", "fsdp", **FULL)
    assert two.returncode == 0, two.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_two_fsdp_processes_train_the_full_model_of_one_process(tiny_model_dir: Path, dataset: Path, fsdp_run: Path,
                                                                tmp_path: Path) -> None:
    one = _finetune(tiny_model_dir, dataset, tmp_path / "one", **FULL)
    assert one.returncode == 0, one.stderr[-3000:]
    difference = _max_difference(_weights(tmp_path / "one"), _weights(fsdp_run))  # the ordinary, unsharded safetensors
    print(f"max |weights(1 process) - weights(2 FSDP processes)| = {difference:.3g}")
    assert difference <= 1e-5
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert _max_difference(base, _weights(fsdp_run)) > 1e-3  # it did train
    started = [e for e in read_events(fsdp_run) if e["type"] == "train.started"][-1]
    assert started["distributed"] == "fsdp" and started["processes"] == 2
    losses = {name: {e["step"]: e["loss"] for e in read_events(run) if e["type"] == "train.step"}
              for name, run in (("one", tmp_path / "one"), ("two", fsdp_run))}
    assert sorted(losses["two"]) == list(range(1, TOTAL_STEPS + 1))
    assert all(abs(losses["one"][s] - losses["two"][s]) < 1e-5 for s in losses["one"])


@pytest.mark.slow
def test_two_fsdp_processes_train_the_lora_adapter_of_one_process(tiny_model_dir: Path, dataset: Path,
                                                                  tmp_path: Path) -> None:
    short = {"method": "lora", "learning_rate": 1e-3, "epochs": 1}
    one = _finetune(tiny_model_dir, dataset, tmp_path / "one", **short)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _finetune(tiny_model_dir, dataset, tmp_path / "two", "--nproc", "2", "--distributed", "fsdp", **short)
    assert two.returncode == 0, two.stderr[-3000:]
    difference = _max_difference(_adapter(tmp_path / "one"), _adapter(tmp_path / "two"))  # PEFT's own adapter files
    print(f"max |adapter(1 process) - adapter(2 FSDP processes)| = {difference:.3g}")
    assert difference <= 1e-5
    assert [e for e in read_events(tmp_path / "two") if e["type"] == "train.started"][-1]["distributed"] == "fsdp"


@pytest.mark.slow
def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_runs_weights(tiny_model_dir: Path, dataset: Path, fsdp_run: Path,
                                                                     tmp_path: Path) -> None:
    script = tmp_path / "killed_child.py"
    script.write_text(KILLED_CHILD)
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
               "--max-restarts", "0", str(script), "finetune", "--data", str(dataset), "--model", str(tiny_model_dir),
               "--output", str(killed), "--distributed", "fsdp", *_flags({**RUN, **FULL})]
    # As in the DDP test: rank 1 dies in the second pass of step 9; the newest checkpoint is step 6.
    run = subprocess.run(command, capture_output=True, text=True, env={**_env(), "KILL_AFTER_PASSES": "16"}, timeout=300)
    assert run.returncode != 0, "the run went on after one of its processes died"
    events = read_events(killed)
    assert max(e["step"] for e in events if e["type"] == "train.step") < TOTAL_STEPS and not (killed / "model").exists()
    optimizer = torch.load(killed / "checkpoints" / "step-000006" / "optimizer.pt", weights_only=True)
    assert all(isinstance(i, int) for i in optimizer["state"])  # one process's format: optimizer.state_dict()'s
    assert sorted(optimizer["state"]) == list(range(len(_weights(fsdp_run))))  # every parameter's state, whole
    assert set(load_file(str(killed / "checkpoints" / "step-000006" / "weights" / "model.safetensors"))) == set(_weights(fsdp_run))

    alone = tmp_path / "alone"  # the same checkpoint resumed in one process: the format is one process's
    shutil.copytree(killed, alone)
    resumed = _cli("resume", str(killed), "--nproc", "2", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [e for e in read_events(killed) if e["type"] == "train.resumed"][-1]["step"] == 6
    in_one = _cli("resume", str(alone), "--distributed", "ddp", "--json")
    assert in_one.returncode == 0, in_one.stderr[-3000:]
    assert _max_difference(_weights(fsdp_run), _weights(alone)) <= 1e-5
    difference = _max_difference(_weights(fsdp_run), _weights(killed))
    print(f"max |weights(uninterrupted) - weights(killed and resumed)| = {difference:.3g}")
    assert difference <= 1e-6
    assert json.loads((killed / "results.json").read_text())["status"] == "succeeded"
