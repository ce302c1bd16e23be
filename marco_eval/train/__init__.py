"""Training: rebuild a Marco-o1-CoT checkpoint (full-parameter CoT SFT) from your own base model.

    problems.py  grade-school word problems with computed answers (en + zh), or a user file
    synth.py     `marco-eval synth`: our MCTS on those problems; keeps correct, highest-reward paths
    data.py      readers (Marco-o1, Open-O1, Alpaca, synthetic rows), quality filters, the merged mix
    sft.py       `marco-eval train CONFIG`: TRL SFTTrainer from an OmegaConf YAML, saved atomically

Configs live in training/ (SFT YAMLs and accelerate launch configs); README "Training" has the recipes.
"""
