"""Training, the library behind the train stage (lota.train) and the fisher stage (lota.fisher).

    lr_choice  the learning rate chosen on validation: the rule and the choice file
    optim      the engine: AdamW and RMSprop over the trainable entries only (flat slots)
    checkpoint saving and resuming the engine's state, bit for bit
    args       the options, declared once in grouped dataclasses; validate()
    data       tokenization, the seeded order of micro-batches and steps, collation
    losses     the forward pass over response tokens, and the SFT loss
    dpo        DPO: preference pairs, sequence log-probabilities, the loss, the reference
    model      loading the model for training (dtype, LoRA, checkpointing, compile, sharding)
    trainable  which entries train, and the engine (optim) that updates them
    gradients  gradient scores for masks: the fisher stage's, RoSA's warm-up mask
    weights    saving the trained weights; what a checkpoint must match to be resumed
    loop       the optimizer steps, checkpoints and the run directory: train()

Each part imports only the parts above it in this list (and the rest of the library), never a
stage (tests/test_layers.py).
"""
