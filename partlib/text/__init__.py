"""Text side of the recipes: tokenizer training and train/held-out overlap checks."""
