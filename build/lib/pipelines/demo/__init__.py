"""The staged demos on generated data: cm3t (pretrain, adapt frozen) and m2clip (zero-shot compositions)."""
