"""DPO and ORPO: the losses equal TRL 1.16's on the same tiny batch, DPO's reference is the base with the
adapter switched off, training raises the preference margin, and the options are validated per objective."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tuneforge.config import make_config
from tuneforge.core.errors import ConfigError
from tuneforge.core.registries import OBJECTIVES
from tuneforge.data.batching import collate
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import IGNORE_INDEX, encode_pair
from tuneforge.model.log_probs import sequence_log_probs
from tuneforge.train.objectives import configured_objective, is_pairwise
from tuneforge.train.objectives.dpo import DpoObjective
from tuneforge.train.objectives.orpo import OrpoObjective

PAIRS = [TrainingExample(prompt="color of the sky?", completion="blue", rejected="green, like grass in summer"),
         TrainingExample(prompt="what color is grass in summer, usually?", completion="green", rejected="red"),
         TrainingExample(prompt="snow?", completion="white as milk", rejected="black")]


def _lora(tiny_model_dir, seed: int = 0):
    """A LoRA model whose adapter is not zero, so policy and reference differ."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))


@pytest.fixture(scope="module")
def pair_batch(tiny_tokenizer):
    return collate([encode_pair(tiny_tokenizer, example, 128) for example in PAIRS], tiny_tokenizer.pad_token_id)


def test_pairs_are_batched_chosen_rows_then_rejected_rows(tiny_tokenizer, pair_batch):
    assert pair_batch["input_ids"].shape[0] == 2 * len(PAIRS)
    pair = encode_pair(tiny_tokenizer, PAIRS[0], 128)
    assert pair.trained_tokens == 1  # the pair is the unit the loss averages over
    chosen_answer = [t for t, label in zip(pair.input_ids, pair.labels) if label != IGNORE_INDEX]
    assert tiny_tokenizer.decode(chosen_answer).startswith("blue")
    rejected_answer = [t for t, label in zip(pair.rejected_ids, pair.rejected_labels) if label != IGNORE_INDEX]
    assert tiny_tokenizer.decode(rejected_answer).startswith("green, like grass")
    width = len(pair.input_ids)
    assert pair_batch["input_ids"][0, :width].tolist() == pair.input_ids
    assert pair_batch["input_ids"][len(PAIRS), : len(pair.rejected_ids)].tolist() == pair.rejected_ids


def test_dpo_loss_equals_trl_dpo_trainer(tiny_model_dir, tiny_tokenizer, pair_batch, tmp_path):
    """TRL's own DPOTrainer (a new LoRA adapter; reference = adapter disabled) on the very same batch."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, report_to=[], use_cpu=True, per_device_train_batch_size=2)
    trainer = DPOTrainer(model=base, args=args, train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
                         processing_class=tiny_tokenizer,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    model = trainer.model
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: policy and reference differ
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.eval()
    inputs = {"input_ids": pair_batch["input_ids"], "attention_mask": pair_batch["attention_mask"],
              "completion_mask": (pair_batch["labels"] != IGNORE_INDEX).long()}
    theirs = trainer._compute_loss(model, inputs, False)
    ours = DpoObjective(beta=0.3)(model, pair_batch)
    assert abs(float(ours.loss_sum / ours.tokens) - float(theirs)) < 1e-5
    metrics = trainer._metrics["eval"]  # the model is in eval mode (no dropout)
    assert abs(ours.metrics["reward_margin"] / ours.tokens - metrics["rewards/margins"][-1]) < 1e-5
    assert abs(ours.metrics["reward_chosen"] / ours.tokens - metrics["rewards/chosen"][-1]) < 1e-5
    assert ours.correct / ours.tokens == pytest.approx(metrics["rewards/accuracies"][-1])
    assert abs(ours.metrics["reward_margin"]) > 1e-3  # the reference really was the adapter switched off
    # and the gradients are TRL's too
    ours_grad = torch.autograd.grad(ours.loss_sum / ours.tokens, [p for p in model.parameters() if p.requires_grad])
    theirs_grad = torch.autograd.grad(trainer._compute_loss(model, inputs, False),
                                      [p for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours_grad, theirs_grad))


def _trl_orpo(model, batch, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's ORPO pieces on ``batch`` (its get_batch_logps and odds_ratio_loss); the NLL on the answer tokens."""
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = ORPOTrainer.get_batch_logps(logits, batch["labels"], average_log_prob=True)
    half = logps.shape[0] // 2
    this = SimpleNamespace(beta=alpha, accelerator=SimpleNamespace(device=logps.device))
    losses, *_ = ORPOTrainer.odds_ratio_loss(this, logps[:half], logps[half:])
    nll = torch.nn.functional.cross_entropy(logits[:half, :-1].reshape(-1, logits.shape[-1]),
                                            batch["labels"][:half, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    return losses, nll - losses.mean()


def test_orpo_loss_equals_trl_odds_ratio_loss(tiny_model_dir, tiny_tokenizer, pair_batch):
    model = _lora(tiny_model_dir)
    model.eval()
    ours = OrpoObjective(alpha=0.25)(model, pair_batch)
    their_ratio_losses, _ = _trl_orpo(model, pair_batch, 0.25)
    # TRL's odds-ratio term (its `losses` are λ·log σ(log odds)) on the same three pairs
    assert abs(0.25 * ours.metrics["log_odds_ratio"] - float(their_ratio_losses.sum())) < 1e-5
    # The whole loss per pair: TRL's nll − λ·log σ(log odds), with the NLL over the answer tokens
    for example in PAIRS:
        one = collate([encode_pair(tiny_tokenizer, example, 128)], tiny_tokenizer.pad_token_id)
        mine = OrpoObjective(alpha=0.25)(model, one)
        _, theirs = _trl_orpo(model, one, 0.25)
        assert abs(float(mine.loss_sum) - float(theirs)) < 1e-5


def test_dpo_reference_is_the_base_with_the_adapter_off(tiny_model_dir, tiny_model, pair_batch):
    model = _lora(tiny_model_dir)
    with torch.no_grad(), model.disable_adapter():
        reference, _ = sequence_log_probs(model, pair_batch)
    base, _ = sequence_log_probs(tiny_model, pair_batch)
    assert torch.allclose(reference, base, atol=1e-5)
    with torch.no_grad():
        policy, _ = sequence_log_probs(model, pair_batch)
    assert not torch.allclose(policy, base, atol=1e-3)


@pytest.mark.parametrize("objective", [DpoObjective(beta=0.5), OrpoObjective(alpha=0.5)], ids=["dpo", "orpo"])
def test_training_on_a_repeated_batch_raises_the_margin(tiny_model_dir, pair_batch, objective):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history = []
    for _ in range(8):
        sums = objective(model, pair_batch)
        history.append((float(sums.loss_sum) / sums.tokens, sums.metrics["reward_margin"] / sums.tokens, sums.correct))
        (sums.loss_sum / sums.tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
    (first_loss, first_margin, _), (last_loss, last_margin, last_correct) = history[0], history[-1]
    assert last_loss < first_loss and last_margin > first_margin + 0.05
    assert last_correct == len(PAIRS)


def test_objective_options_are_validated_per_objective():
    assert is_pairwise(make_config({"objective": "dpo"})) and not is_pairwise(make_config({}))
    assert {"sft", "dpo", "orpo"} <= set(OBJECTIVES.names())
    assert configured_objective(make_config({"objective": "dpo", "dpo_beta": 0.5})).beta == 0.5
    assert configured_objective(make_config({"objective": "orpo", "orpo_alpha": 0.2})).alpha == 0.2
    assert make_config({"objective": "dpo"}).packing is False  # chosen and rejected rows are padded side by side
    for values, says in (({"dpo_beta": 0.5}, "dpo_beta (--dpo-beta) is an option of objective dpo"),
                         ({"objective": "orpo", "dpo_beta": 0.5}, "not of objective 'orpo'"),
                         ({"objective": "dpo", "orpo_alpha": 1.0}, "orpo_alpha"),
                         ({"objective": "dpo", "method": "full"}, "--objective orpo, which needs no reference model"),
                         ({"objective": "dpo", "packing": True}, "padded batches"),
                         ({"objective": "dpo", "dpo_beta": 0}, "dpo_beta")):
        with pytest.raises(ConfigError) as caught:
            make_config(values)
        assert says in str(caught.value)
    assert make_config({"objective": "orpo", "method": "full"}).method == "full"


def _preference_rows(count: int = 32) -> list[dict]:
    """A consistent preference: the colour word, not the number."""
    things = ["sky", "sea", "grass", "leaf", "snow", "milk", "rose", "blood"]
    colours = {"sky": "blue", "sea": "blue", "grass": "green", "leaf": "green", "snow": "white", "milk": "white",
               "rose": "red", "blood": "red"}
    return [{"prompt": f"what color is the {things[i % 8]}? ({i})", "chosen": colours[things[i % 8]], "rejected": str(i % 10)}
            for i in range(count)]


def test_finetune_with_dpo_logs_rewards_and_scores_base_vs_tuned(tiny_model_dir, tmp_path):
    """Through the CLI: a DPO run on preference rows logs its rewards, and results.json (printed) holds the
    held-out preference accuracy of the base and the tuned model."""
    import json

    from helpers import read_events, write_jsonl
    from tuneforge.cli.main import main

    data = write_jsonl(tmp_path / "pairs.jsonl", _preference_rows())
    run_dir = tmp_path / "run"
    code = main(["finetune", "--data", str(data), "--model", str(tiny_model_dir), "--objective", "dpo",
                 "--dpo-beta", "0.5", "--learning-rate", "1e-2", "--epochs", "3", "--batch-size", "8",
                 "--test-split", "0.25", "--validation-split", "0.1", "--max-length", "64", "--no-baselines",
                 "--no-forgetting-check", "--precision", "fp32", "--evaluation-metrics", "loss,exact_match",
                 "--output", str(run_dir), "--json"])
    assert code == 0
    steps = [event for event in read_events(run_dir) if event["type"] == "train.step"]
    assert all({"reward_chosen", "reward_rejected", "reward_margin", "preference_accuracy"} <= set(step) for step in steps)
    assert steps[-1]["reward_margin"] > steps[0]["reward_margin"]
    evaluation = next(event for event in read_events(run_dir) if event["type"] == "eval.result")
    assert "validation_reward_margin" in evaluation and 0 <= evaluation["validation_accuracy"] <= 1
    results = json.loads((run_dir / "results.json").read_text())
    base, tuned = results["base"], results["tuned"]
    assert tuned["preference_margin"] > base["preference_margin"]
    assert tuned["preference_accuracy"] >= base["preference_accuracy"]
    saved = (run_dir / "data" / "train.jsonl").read_text().splitlines()[0]
    assert '"rejected"' in saved  # the run's own data snapshot keeps the pairs (resume trains on them)


def test_a_pairwise_objective_refuses_data_without_rejected_answers(tiny_model_dir, session_dataset, tmp_path, capsys):
    from tuneforge.cli.main import main

    code = main(["finetune", "--data", str(session_dataset), "--model", str(tiny_model_dir), "--objective", "dpo",
                 "--output", str(tmp_path / "run")])
    assert code == 1 and not (tmp_path / "run").exists()
    assert "objective dpo trains on preference pairs" in capsys.readouterr().err


@pytest.mark.slow
def test_dpo_over_two_processes_logs_the_rewards_of_one(tiny_model_dir, tmp_path):
    """--nproc 2: each process's reward sums are added over the processes before they are logged."""
    from helpers import read_events, write_jsonl
    from test_distributed import _finetune

    data = write_jsonl(tmp_path / "pairs.jsonl", _preference_rows(36))
    fields = dict(objective="dpo", learning_rate=5e-3, max_length=64)
    runs = {}
    for name, extra in (("one", ()), ("two", ("--nproc", "2"))):
        done = _finetune(tiny_model_dir, data, tmp_path / name, *extra, **fields)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = {e["step"]: e for e in read_events(tmp_path / name) if e["type"] == "train.step"}
    assert sorted(runs["one"]) == sorted(runs["two"])
    # figures large enough that one process's share alone (about half) would differ
    assert max(abs(e["reward_margin"]) for e in runs["one"].values()) > 1e-2
    assert max(e["preference_accuracy"] for e in runs["one"].values()) >= 0.5
    for step, event in runs["one"].items():
        for key in ("loss", "reward_margin", "reward_chosen", "preference_accuracy"):
            assert abs(event[key] - runs["two"][step][key]) < 1e-4, (step, key)
