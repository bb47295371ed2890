"""In-context learning of Gaussian single-index targets (SPEC sections 2-5).

    links.py     Hermite links g, their information / generative exponents, and the
                 context-free optimum E[g(<beta, x>) | x]
    task.py      SingleIndexTask(d, r, link, tau, seed).sample(rng, n_prompts, N, n_queries)
    features.py  phi(x), the normalised Hermite features of degree <= 2
    gates.py     the gate primitives: the product gate (closed form and as an S6 scan with
                 exact ZOH through Euler) and the normalized gate; also used by outliers/
    gated.py     paper 1's one-layer gated Mamba (product gate via the selective scan,
                 normalized, two-channel, none = linear attention)
    pretrain.py  two-stage pretraining (Stage I, Stage II) and the practical AdamW variant
    krr.py       kernel ridge regression per prompt with leave-one-out selection
    baselines.py the reference predictors (zero, context-free, KRR, oracle) of icl-theory and icl-eval
    metrics.py   the normalised error with standard errors and paired differences
    theory.py    the ``icl-theory`` command line; theory_run.py its runner, theory_report.py its
                 tables and figures
Submodules are imported where used, so ``import mamba_from_scratch.icl.outliers`` does not
pay for these.
"""
