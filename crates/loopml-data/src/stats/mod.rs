//! Two-sample drift statistics (the methods Evidently 0.7 offers), checked against SciPy.
