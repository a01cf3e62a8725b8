"""The texts ``tuneforge --help`` and the commands' help share: examples, exit statuses, data files and row formats."""

from __future__ import annotations

EXAMPLES = """\
examples:
  tuneforge finetune --data my.jsonl                      LoRA on the embedded SmolLM2-135M-Instruct
  tuneforge finetune --data my.jsonl --epochs 2 --output runs/mine
  tuneforge finetune --config run.yaml --learning-rate 5e-4   a YAML config; flags override it
  tuneforge eval --data test.jsonl --adapter runs/mine    score a trained run on your data
  tuneforge chat --adapter runs/mine --prompt "Hello"     talk to a trained run
  tuneforge report runs/mine                              rebuild runs/mine/report.html
  tuneforge monitor runs/mine                             follow a running run live (or replay a finished one)
  tuneforge resume runs/mine                              continue an interrupted run exactly where it stopped
  tuneforge finetune --data my.jsonl --nproc 2            train in 2 processes (DDP: gloo on CPU, NCCL on GPUs)
  tuneforge finetune --data my.jsonl --method full --nproc 2 --distributed fsdp   ... the model sharded (FSDP)
  tuneforge validate my.jsonl --model smollm2-135m-instruct   the data doctor: every problem, token counts
  tuneforge demo                                          the bundled example task, end to end
  tuneforge search --config search.yaml                   hyperparameter search with Optuna (trials, pruning, best config)
"""

EXIT_STOPPED_BY_SIGNAL = 75  # EX_TEMPFAIL: stopped cleanly with a checkpoint; try again with `tuneforge resume`
EXIT_CODES = """\
exit status: 0 success; 1 the input or the run failed (a message, no traceback); 2 wrong usage;
  75 stopped by Ctrl-C/SIGTERM: the current step was finished and a checkpoint saved
     (continue with: tuneforge resume RUN_DIR); 130 stopped at once by a second signal.
"""

DATA_HELP = """\
data files: .jsonl .json .csv .parquet, or a directory saved with datasets' save_to_disk.
row formats (auto-detected; force one with --data-format):
{formats}
The loss is taken on the answers only (the end-of-turn token included) unless --train-on-prompt.
"""


def data_help() -> str:
    """DATA_HELP with the row formats of the registry (data/row_formats/), each with a sample row."""
    from tuneforge.data.row_formats import formats_help

    return DATA_HELP.format(formats=formats_help())
