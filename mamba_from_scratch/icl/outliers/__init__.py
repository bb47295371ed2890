"""Paper 3 (Li et al. 2025, arXiv 2510.00399): in-context classification with outliers.

    data.py        the data model: patterns, task split, prompts with corrupted outliers
    model.py       one-layer Mamba (gated sum = an S6 scan) and linear Transformer, by hand
    train.py       SGD on the hinge loss, classification error
    floor.py       the exact error floor of a same-pattern vote
    design.py      what the experiment varies (alphas, studies), shared by the runner and the reports
    report.py      tables and figures
    experiment.py  ``python -m mamba_from_scratch outliers``
"""
