//! Figures: printed as `name value unit` the moment they are measured, and
//! again in a summary table with median, min and max at the end.

/// What a figure should be, where the issue sets a goal.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    Equal(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(limit) => value <= limit,
            // Byte ratios: equal up to rounding in the last printed digit.
            Target::Equal(goal) => (value - goal).abs() < 0.005,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::AtMost(limit) => format!("<= {limit}"),
            Target::Equal(goal) => format!("= {goal:.2}"),
        }
    }
}

struct Figure {
    name: String,
    unit: &'static str,
    samples: Vec<f64>,
    target: Option<Target>,
}

impl Figure {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> f64 {
        median(&self.samples)
    }
}

/// Everything measured in one run.
#[derive(Default)]
pub struct Report {
    figures: Vec<Figure>,
    tables: Vec<String>,
}

impl Report {
    /// Record a figure from its samples (one per run) and print its line.
    pub fn record(&mut self, name: impl Into<String>, unit: &'static str, samples: Vec<f64>, target: Option<Target>) {
        assert!(!samples.is_empty(), "a figure needs a sample");
        let figure = Figure { name: name.into(), unit, samples, target };
        println!("{} {:.3} {}", figure.name, figure.median(), figure.unit);
        self.figures.push(figure);
    }

    /// Keep a table for the summary (and print it now).
    pub fn table(&mut self, text: String) {
        println!("{text}");
        self.tables.push(text);
    }

    /// The summary: every figure with median, min, max and its target.
    pub fn summary(&self) -> String {
        let mut out = String::from("\nfigure                                   median        min        max  unit  runs  target\n");
        for f in &self.figures {
            let sorted = f.sorted();
            let verdict = f.target.map_or(String::new(), |t| {
                format!("{} {}", t.describe(), if t.met(f.median()) { "met" } else { "MISSED" })
            });
            out.push_str(&format!(
                "{:<38} {:>10.3} {:>10.3} {:>10.3}  {:<5} {:>4}  {}\n",
                f.name,
                f.median(),
                sorted[0],
                sorted[sorted.len() - 1],
                f.unit,
                sorted.len(),
                verdict
            ));
        }
        for t in &self.tables {
            out.push('\n');
            out.push_str(t);
            out.push('\n');
        }
        out
    }
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 50.0)
}

/// Milliseconds of a duration.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn targets_judge_the_median() {
        assert!(Target::AtMost(1.05).met(1.04));
        assert!(!Target::AtMost(1.05).met(1.06));
        assert!(Target::Equal(1.0).met(1.001));
        assert!(!Target::Equal(1.0).met(1.02));
    }
}
