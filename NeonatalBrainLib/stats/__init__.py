"""Statistics for cohort studies and classifier evaluation (definitions: docs/statistics.md).

* :mod:`.roc` - AUC (Mann-Whitney), DeLong CI and paired test, ROC points, Youden
  threshold, confusion-matrix metrics, ROC plots.
* :mod:`.groups` - group comparisons for a clinical table (test chosen by the distribution,
  effect sizes, Benjamini-Hochberg q-values).
* :mod:`.correlation` - Pearson/Spearman correlations with Fisher-z CIs.
* :mod:`.cohort` - metrics x clinical data -> CSV, Markdown and HTML tables.
* :mod:`.nomogram` - logistic nomogram, calibration, Hosmer-Lemeshow, decision curves.
* :mod:`.cli` - ``neonatal-brain cohort-stats | compare | nomogram``.
"""
