"""The forms a fine-tune's weight change takes, and their files: masks (which entries train), sparse
deltas, LoRA adapters, PEFT Super-Tuning adapters; and the tensor operations that merge several task
vectors."""
