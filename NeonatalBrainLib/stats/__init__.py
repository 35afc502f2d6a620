"""Statistics for cohort studies and classifier evaluation."""
