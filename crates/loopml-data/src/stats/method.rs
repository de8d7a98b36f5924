//! Evidently's drift methods as a closed set: names, default thresholds, which side of the
//! threshold means drift (its `registry.py` and each stattest's module), and the default choice
//! per column (`_get_default_stattest`).

use super::binning::{distinct_value_counts, evidently_binned_counts};
use super::{
    CategoryCount, anderson_ksamp, chi_square, cramer_von_mises_2samp, energy_distance,
    hellinger_categorical, hellinger_numeric, jensen_shannon, kl_div, ks_2samp,
    mann_whitney_u_less, psi, t_test_ind, wasserstein_normed, z_test,
};
use crate::error::{Error, Result};

/// The kind of column a drift method is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Numbers (drift is computed on the values).
    Numerical,
    /// Labels (drift is computed on per-category counts).
    Categorical,
}

/// Which side of the threshold means drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftWhen {
    /// The score is a p-value and drift means `p <= threshold`.
    PValueAtMost,
    /// The score is a p-value and drift means `p < threshold`.
    PValueBelow,
    /// The score is a distance and drift means `d >= threshold`.
    ScoreAtLeast,
    /// The score is a distance and drift means `d > threshold`.
    ScoreAbove,
}

impl DriftWhen {
    /// Whether `score` against `threshold` means drift (a NaN score never does).
    pub fn is_drift(self, score: f64, threshold: f64) -> bool {
        match self {
            Self::PValueAtMost => score <= threshold,
            Self::PValueBelow => score < threshold,
            Self::ScoreAtLeast => score >= threshold,
            Self::ScoreAbove => score > threshold,
        }
    }
}

/// A two-sample drift method, named as in Evidently (`stattest="ks"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DriftMethod {
    /// Kolmogorov–Smirnov p-value (`ks`).
    #[serde(rename = "ks")]
    Ks,
    /// Chi-square p-value (`chisquare`).
    #[serde(rename = "chisquare")]
    ChiSquare,
    /// Two-proportion Z-test p-value (`z`).
    #[serde(rename = "z")]
    Z,
    /// Normed Wasserstein distance (`wasserstein`).
    #[serde(rename = "wasserstein")]
    Wasserstein,
    /// Jensen–Shannon distance (`jensenshannon`).
    #[serde(rename = "jensenshannon")]
    JensenShannon,
    /// Population stability index (`psi`).
    #[serde(rename = "psi")]
    Psi,
    /// Kullback–Leibler divergence (`kl_div`).
    #[serde(rename = "kl_div")]
    KlDiv,
    /// Hellinger distance (`hellinger`).
    #[serde(rename = "hellinger")]
    Hellinger,
    /// k-sample Anderson–Darling significance level (`anderson`).
    #[serde(rename = "anderson")]
    Anderson,
    /// Cramér–von Mises p-value (`cramer_von_mises`).
    #[serde(rename = "cramer_von_mises")]
    CramerVonMises,
    /// Energy distance (`ed`).
    #[serde(rename = "ed")]
    EnergyDistance,
    /// Mann–Whitney U p-value, alternative "less" (`mannw`).
    #[serde(rename = "mannw")]
    MannWhitney,
    /// Student's t-test p-value (`t_test`).
    #[serde(rename = "t_test")]
    TTest,
}

impl DriftMethod {
    /// Every method, in Evidently's registry order.
    pub const ALL: [DriftMethod; 13] = [
        Self::Ks,
        Self::ChiSquare,
        Self::Z,
        Self::Wasserstein,
        Self::JensenShannon,
        Self::Psi,
        Self::KlDiv,
        Self::Hellinger,
        Self::Anderson,
        Self::CramerVonMises,
        Self::EnergyDistance,
        Self::MannWhitney,
        Self::TTest,
    ];

    /// Evidently's registered name (`"ks"`, `"chisquare"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ks => "ks",
            Self::ChiSquare => "chisquare",
            Self::Z => "z",
            Self::Wasserstein => "wasserstein",
            Self::JensenShannon => "jensenshannon",
            Self::Psi => "psi",
            Self::KlDiv => "kl_div",
            Self::Hellinger => "hellinger",
            Self::Anderson => "anderson",
            Self::CramerVonMises => "cramer_von_mises",
            Self::EnergyDistance => "ed",
            Self::MannWhitney => "mannw",
            Self::TTest => "t_test",
        }
    }

    /// The method with Evidently's registered `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Evidently's display name (`"K-S p_value"`, …), shown in reports.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Ks => "K-S p_value",
            Self::ChiSquare => "chi-square p_value",
            Self::Z => "Z-test p_value",
            Self::Wasserstein => "Wasserstein distance (normed)",
            Self::JensenShannon => "Jensen-Shannon distance",
            Self::Psi => "PSI",
            Self::KlDiv => "Kullback-Leibler divergence",
            Self::Hellinger => "Hellinger distance",
            Self::Anderson => "Anderson-Darling",
            Self::CramerVonMises => "Cramer-von Mises",
            Self::EnergyDistance => "Energy-distance",
            Self::MannWhitney => "Mann-Whitney U-rank test",
            Self::TTest => "t_test",
        }
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            Self::Ks | Self::ChiSquare | Self::Z | Self::MannWhitney | Self::TTest => 0.05,
            Self::Wasserstein
            | Self::JensenShannon
            | Self::Psi
            | Self::KlDiv
            | Self::Hellinger
            | Self::Anderson
            | Self::CramerVonMises
            | Self::EnergyDistance => 0.1,
        }
    }

    /// Which side of the threshold means drift.
    pub fn drift_when(self) -> DriftWhen {
        match self {
            Self::Ks | Self::CramerVonMises => DriftWhen::PValueAtMost,
            Self::ChiSquare | Self::Z | Self::Anderson | Self::MannWhitney | Self::TTest => {
                DriftWhen::PValueBelow
            }
            Self::Wasserstein | Self::JensenShannon | Self::Psi | Self::KlDiv | Self::Hellinger => {
                DriftWhen::ScoreAtLeast
            }
            Self::EnergyDistance => DriftWhen::ScoreAbove,
        }
    }

    /// Whether the score is a p-value (small = drift) rather than a distance (large = drift).
    pub fn is_p_value(self) -> bool {
        matches!(
            self.drift_when(),
            DriftWhen::PValueAtMost | DriftWhen::PValueBelow
        )
    }

    /// Whether the method accepts a column of this kind. Numeric columns accept every method
    /// (chi-square and Z treat distinct values as categories, as Evidently's defaults do);
    /// categorical columns accept only the count-based ones.
    pub fn supports(self, kind: ColumnKind) -> bool {
        match kind {
            ColumnKind::Numerical => true,
            ColumnKind::Categorical => matches!(
                self,
                Self::ChiSquare
                    | Self::Z
                    | Self::JensenShannon
                    | Self::Psi
                    | Self::KlDiv
                    | Self::Hellinger
            ),
        }
    }

    /// The method's score for a numeric column (values without NaN/±inf).
    pub fn score_numeric(self, reference: &[f64], current: &[f64]) -> Result<f64> {
        match self {
            Self::Ks => Ok(ks_2samp(reference, current)?.p_value),
            Self::ChiSquare | Self::Z => {
                super::check_samples(reference, current)?;
                let counts: Vec<CategoryCount> = distinct_value_counts(reference, current)
                    .into_iter()
                    .map(|(_, c)| c)
                    .collect();
                self.score_categorical(&counts)
            }
            Self::Wasserstein => wasserstein_normed(reference, current),
            Self::JensenShannon => evidently_binned_counts(reference, current)?.jensen_shannon(),
            Self::Psi => evidently_binned_counts(reference, current)?.psi(),
            Self::KlDiv => evidently_binned_counts(reference, current)?.kl_div(),
            Self::Hellinger => hellinger_numeric(reference, current),
            Self::Anderson => Ok(anderson_ksamp(reference, current)?.significance_level),
            Self::CramerVonMises => Ok(cramer_von_mises_2samp(reference, current)?.p_value),
            Self::EnergyDistance => energy_distance(reference, current),
            Self::MannWhitney => Ok(mann_whitney_u_less(reference, current)?.p_value),
            Self::TTest => Ok(t_test_ind(reference, current)?.p_value),
        }
    }

    /// The method's score for a categorical column, from per-category counts (for `z`, pass the
    /// categories in ascending sort order: the first one is coded 0).
    pub fn score_categorical(self, counts: &[CategoryCount]) -> Result<f64> {
        match self {
            Self::ChiSquare => Ok(chi_square(counts)?.p_value),
            Self::Z => Ok(z_test(counts)?.p_value),
            Self::JensenShannon => jensen_shannon(counts),
            Self::Psi => psi(counts),
            Self::KlDiv => kl_div(counts),
            Self::Hellinger => hellinger_categorical(counts),
            Self::Ks
            | Self::Wasserstein
            | Self::Anderson
            | Self::CramerVonMises
            | Self::EnergyDistance
            | Self::MannWhitney
            | Self::TTest => Err(Error::Invalid(format!(
                "drift method `{}` needs a numerical column",
                self.name()
            ))),
        }
    }

    /// Scores a numeric column and judges it against `threshold` (the default when `None`).
    pub fn detect_numeric(
        self,
        reference: &[f64],
        current: &[f64],
        threshold: Option<f64>,
    ) -> Result<DriftVerdict> {
        let score = self.score_numeric(reference, current)?;
        Ok(self.verdict(score, threshold))
    }

    /// Scores a categorical column and judges it against `threshold` (the default when `None`).
    pub fn detect_categorical(
        self,
        counts: &[CategoryCount],
        threshold: Option<f64>,
    ) -> Result<DriftVerdict> {
        let score = self.score_categorical(counts)?;
        Ok(self.verdict(score, threshold))
    }

    /// Judges a score against `threshold` (the default when `None`).
    pub fn verdict(self, score: f64, threshold: Option<f64>) -> DriftVerdict {
        let threshold = threshold.unwrap_or_else(|| self.default_threshold());
        DriftVerdict {
            method: self,
            score,
            threshold,
            drifted: self.drift_when().is_drift(score, threshold),
        }
    }
}

impl std::fmt::Display for DriftMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DriftMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
            Error::Invalid(format!(
                "unknown drift method `{s}`; known: {}",
                names.join(", ")
            ))
        })
    }
}

/// One column's drift decision.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftVerdict {
    /// The method used.
    pub method: DriftMethod,
    /// Its score (a p-value or a distance).
    pub score: f64,
    /// The threshold it was judged against.
    pub threshold: f64,
    /// Whether the score means drift.
    pub drifted: bool,
}

/// Evidently's default method for a non-text column (`_get_default_stattest`).
///
/// `n_ref` is the number of reference values after dropping NaN and ±inf; `n_unique` the number
/// of distinct values of reference and current together. Up to 1000 reference values: numeric
/// columns with more than 5 distinct values use `ks`, with 3–5 `chisquare`, with at most 2 `z`;
/// categorical columns use `chisquare` above 2 distinct values, else `z`. Above 1000 reference
/// values: numeric columns with more than 5 distinct values use `wasserstein`, everything else
/// `jensenshannon`.
pub fn default_method(kind: ColumnKind, n_ref: usize, n_unique: usize) -> DriftMethod {
    let small = n_ref <= 1000;
    match (kind, small) {
        (ColumnKind::Numerical, true) if n_unique > 5 => DriftMethod::Ks,
        (ColumnKind::Numerical, true) | (ColumnKind::Categorical, true) => {
            if n_unique > 2 {
                DriftMethod::ChiSquare
            } else {
                DriftMethod::Z
            }
        }
        (ColumnKind::Numerical, false) if n_unique > 5 => DriftMethod::Wasserstein,
        (ColumnKind::Numerical, false) | (ColumnKind::Categorical, false) => {
            DriftMethod::JensenShannon
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_choice_follows_evidently() {
        use ColumnKind::*;
        use DriftMethod::*;
        assert_eq!(default_method(Numerical, 1000, 6), Ks);
        assert_eq!(default_method(Numerical, 1000, 5), ChiSquare);
        assert_eq!(default_method(Numerical, 1000, 3), ChiSquare);
        assert_eq!(default_method(Numerical, 1000, 2), Z);
        assert_eq!(default_method(Categorical, 10, 3), ChiSquare);
        assert_eq!(default_method(Categorical, 10, 2), Z);
        assert_eq!(default_method(Numerical, 1001, 6), Wasserstein);
        assert_eq!(default_method(Numerical, 1001, 5), JensenShannon);
        assert_eq!(default_method(Numerical, 1001, 1), JensenShannon);
        assert_eq!(default_method(Categorical, 5000, 100), JensenShannon);
    }

    #[test]
    fn thresholds_and_directions_follow_the_registry() {
        let ks = DriftMethod::Ks.verdict(0.05, None);
        assert!(ks.drifted, "ks drifts at p == threshold");
        assert!(!DriftMethod::ChiSquare.verdict(0.05, None).drifted);
        assert!(DriftMethod::Wasserstein.verdict(0.1, None).drifted);
        assert!(!DriftMethod::EnergyDistance.verdict(0.1, None).drifted);
        assert!(DriftMethod::Anderson.verdict(0.09, None).drifted);
        assert!(DriftMethod::CramerVonMises.verdict(0.1, None).drifted);
        assert!(!DriftMethod::Ks.verdict(f64::NAN, None).drifted);
        for m in DriftMethod::ALL {
            assert_eq!(m.name().parse::<DriftMethod>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        assert!("nope".parse::<DriftMethod>().is_err());
    }

    #[test]
    fn numeric_only_methods_reject_counts() {
        let c = [CategoryCount::new(1, 2), CategoryCount::new(3, 4)];
        assert!(matches!(
            DriftMethod::Ks.score_categorical(&c),
            Err(Error::Invalid(_))
        ));
        assert!(!DriftMethod::Ks.supports(ColumnKind::Categorical));
        assert!(DriftMethod::Psi.supports(ColumnKind::Categorical));
    }
}
