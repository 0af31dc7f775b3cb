"""Trainers. Run them with `accelerate launch -m invgen.train {base,groups,invdiff,cdvg} --config FILE`."""
