"""Math shared by several built-in plugins: similarity of maps, model randomization, BatchNorm
folding, expanded-batch chunking."""
