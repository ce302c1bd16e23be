"""Training: rebuild a Marco-o1-CoT checkpoint (CoT SFT, full-parameter or LoRA) from your own
base model, and a learned verifier for the search.

    problems.py  grade-school word problems with computed answers (en + zh), or a user file
    synth.py     `marco-eval synth`: our MCTS on those problems; keeps correct, highest-reward paths
    bank.py      `marco-eval bank`: the model's own labelled samples on GSM8K train (resumable)
    rft.py       `marco-eval bank --rows`: the bank's distinct correct paths as Marco-o1 rows
    data.py      readers (Marco-o1, Open-O1, Alpaca, synthetic rows), quality filters, the merged mix
    sft.py       `marco-eval train CONFIG`: TRL SFTTrainer from an OmegaConf YAML, saved atomically;
                 `--assemble` rebuilds a LoRA run's checkpoint from its kept adapter
    verifier_features.py  the policy's hidden states on its bank samples (what a head reads)
    verifier.py  `marco-eval verifier`: a value head on those states, saved as a checkpoint

Configs live in training/ (SFT YAMLs and accelerate launch configs); docs/training.md has the recipes.
"""
