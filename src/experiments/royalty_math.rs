//! Experiment kind `royalty-math` (bet 14): settle seeded request traffic
//! plus adversarial replays through the royalty ledger and audit the result.
//! See [`crate::sim::royalty`] for the model and the rounding rule.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Cell, Env, Experiment, Factor, Metric, Prepared, overrides, parse_params};
use crate::sim::royalty::{self, RoyaltyOutcome, RoyaltyParams};
use crate::table::{ColumnType, Row, Value};

/// The `royalty-math` kind.
pub struct RoyaltyMath;

/// `[procedure]` parameters; every one is optional and defaults to bet 14's
/// published scale.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Params {
    /// Specialists, each with its own trainer account (default 3).
    specialists: usize,
    /// Servers, each with its own account (default 3).
    servers: usize,
    /// Served requests, i.e. genuine receipts (default 10000).
    requests: usize,
    /// Smallest fee in integer units (default 1).
    fee_min: u64,
    /// Largest fee in integer units (default 1000).
    fee_max: u64,
    /// Percent of each fee paid to the trainer, floored (default 30).
    trainer_share_percent: u64,
    /// Verbatim resubmissions, as a fraction of requests (default 0.1).
    replay_fraction: f64,
    /// Tampered copies (genuine id, altered fee or server), as a fraction
    /// of requests (default 0.0).
    tamper_fraction: f64,
}

impl Default for Params {
    fn default() -> Self {
        let d = RoyaltyParams::default();
        Params {
            specialists: d.specialists,
            servers: d.servers,
            requests: d.requests,
            fee_min: d.fee_min,
            fee_max: d.fee_max,
            trainer_share_percent: d.trainer_share_percent,
            replay_fraction: d.replay_fraction,
            tamper_fraction: d.tamper_fraction,
        }
    }
}

impl Params {
    fn to_sim(&self) -> RoyaltyParams {
        RoyaltyParams {
            specialists: self.specialists,
            servers: self.servers,
            requests: self.requests,
            fee_min: self.fee_min,
            fee_max: self.fee_max,
            trainer_share_percent: self.trainer_share_percent,
            replay_fraction: self.replay_fraction,
            tamper_fraction: self.tamper_fraction,
        }
    }
}

/// Parse and range-check the procedure table into simulation parameters.
fn sim_params(params: &toml::Table) -> Result<RoyaltyParams, String> {
    let p = parse_params::<Params>(params)?.to_sim();
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

const FACTORS: &[Factor] = &[
    Factor {
        name: "seed",
        kind: ColumnType::Int,
        required: true,
        allowed: &[],
        doc: "Seeds the traffic (specialist, server, fee per request) and the adversary.",
    },
    Factor {
        name: "requests",
        kind: ColumnType::Int,
        required: false,
        allowed: &[],
        doc: "Overrides the `requests` parameter for this cell.",
    },
    Factor {
        name: "replay_fraction",
        kind: ColumnType::Float,
        required: false,
        allowed: &[],
        doc: "Overrides the `replay_fraction` parameter for this cell.",
    },
    Factor {
        name: "tamper_fraction",
        kind: ColumnType::Float,
        required: false,
        allowed: &[],
        doc: "Overrides the `tamper_fraction` parameter for this cell.",
    },
];

const fn int(name: &'static str, doc: &'static str) -> Metric {
    Metric { name, kind: ColumnType::Int, doc }
}

const METRICS: &[Metric] = &[
    int("receipts", "Genuine receipts issued, one per served request (count)."),
    int("submissions", "Receipts handed to the ledger: genuine, replayed and tampered (count)."),
    int("accepted", "Submissions the ledger settled (count)."),
    int("genuine_rejected", "Genuine receipts the ledger refused; should be 0 (count)."),
    int("replays_submitted", "Verbatim resubmissions of already-submitted receipts (count)."),
    int("replays_rejected", "Replays the ledger refused (count)."),
    int("tampered_submitted", "Copies with a genuine id but altered fee or server (count)."),
    int("tampered_rejected", "Tampered copies the ledger refused (count)."),
    int(
        "double_counted",
        "Settlements accepted for a receipt id that was already settled, counted by the simulation, not the ledger (count).",
    ),
    int("fees_total", "Sum of the fees of the genuine receipts (units)."),
    int("paid_total", "Sum of every account balance at the end (units)."),
    int("trainer_paid_total", "Sum of the trainer balances (units)."),
    int("server_paid_total", "Sum of the server balances (units)."),
    int(
        "conservation_violations",
        "Settled receipts whose trainer and server shares do not sum to the fee, plus 1 if the balances do not sum to the settled fees (count).",
    ),
    int(
        "max_abs_imbalance",
        "Largest |ledger balance - balance recomputed from the genuine receipts| over all accounts (units).",
    ),
    Metric {
        name: "trainer_share_effective",
        kind: ColumnType::Float,
        doc: "trainer_paid_total / paid_total: the split actually paid, after flooring (ratio; 0 when nothing was paid).",
    },
];

impl Experiment for RoyaltyMath {
    fn kind(&self) -> &'static str {
        "royalty-math"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Settle seeded receipts plus adversarial replays through a 30/70 royalty ledger; audit conservation and double counting."
    }

    fn factors(&self) -> &'static [Factor] {
        FACTORS
    }

    fn metrics(&self) -> &'static [Metric] {
        METRICS
    }

    fn check_params(&self, params: &toml::Table) -> Result<(), String> {
        sim_params(params).map(|_| ())
    }

    fn prepare(&self, params: &toml::Table, _env: &Env) -> anyhow::Result<Box<dyn Prepared>> {
        let params = sim_params(params).map_err(|e| anyhow::anyhow!("royalty-math: {e}"))?;
        Ok(Box::new(Ready { params }))
    }
}

/// Validated parameters; the simulation needs no data.
struct Ready {
    params: RoyaltyParams,
}

impl Prepared for Ready {
    fn inputs(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn run_cell(&self, cell: &Cell) -> anyhow::Result<Row> {
        let mut p = self.params.clone();
        if let Some(n) = overrides::count(cell, "requests")? {
            p.requests = n;
        }
        if let Some(f) = overrides::number(cell, "replay_fraction")? {
            p.replay_fraction = f;
        }
        if let Some(f) = overrides::number(cell, "tamper_fraction")? {
            p.tamper_fraction = f;
        }
        let o = royalty::simulate(&p, cell.seed()?).map_err(|e| anyhow::anyhow!("cell {}: {e}", cell.index))?;
        Ok(row(&o))
    }
}

fn row(o: &RoyaltyOutcome) -> Row {
    let share = if o.paid_total == 0 { 0.0 } else { o.trainer_paid_total as f64 / o.paid_total as f64 };
    let ints = [
        ("receipts", o.receipts),
        ("submissions", o.submissions),
        ("accepted", o.accepted),
        ("genuine_rejected", o.genuine_rejected),
        ("replays_submitted", o.replays_submitted),
        ("replays_rejected", o.replays_rejected),
        ("tampered_submitted", o.tampered_submitted),
        ("tampered_rejected", o.tampered_rejected),
        ("double_counted", o.double_counted),
        ("fees_total", o.fees_total),
        ("paid_total", o.paid_total),
        ("trainer_paid_total", o.trainer_paid_total),
        ("server_paid_total", o.server_paid_total),
        ("conservation_violations", o.conservation_violations),
        ("max_abs_imbalance", o.max_abs_imbalance),
    ];
    let mut row: Row = ints.into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect();
    row.insert("trainer_share_effective".into(), Value::Float(share));
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::find;

    fn table(src: &str) -> toml::Table {
        src.parse().unwrap()
    }

    fn cell(factors: &[(&str, Value)]) -> Cell {
        Cell {
            index: 0,
            factors: factors.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            key: "test-cell".into(),
        }
    }

    fn env() -> Env {
        Env { cache_dir: std::env::temp_dir(), profile: "tiny".into(), threads: 1, progress: std::sync::Arc::new(crate::services::Silent) }
    }

    #[test]
    fn royalty_math_is_registered() {
        assert_eq!(find("royalty-math").map(|e| e.kind()), Some("royalty-math"));
    }

    #[test]
    fn a_cell_emits_exactly_the_declared_metrics_with_their_types() {
        let ready = RoyaltyMath.prepare(&table("requests = 500\ntamper_fraction = 0.1"), &env()).unwrap();
        assert!(ready.inputs().is_empty());
        let row = ready.run_cell(&cell(&[("seed", Value::Int(1))])).unwrap();
        let declared: Vec<_> = METRICS.iter().map(|m| m.name).collect();
        let emitted: Vec<_> = row.keys().map(String::as_str).collect();
        let mut sorted = declared.clone();
        sorted.sort();
        assert_eq!(emitted, sorted);
        for m in METRICS {
            assert_eq!(row[m.name].column_type(), m.kind, "{}", m.name);
        }
        assert_eq!(row["receipts"], Value::Int(500));
        assert_eq!(row["double_counted"], Value::Int(0));
        assert_eq!(row["conservation_violations"], Value::Int(0));
        assert_eq!(row["tampered_rejected"], Value::Int(50));
        assert_eq!(row["paid_total"], row["fees_total"]);
    }

    #[test]
    fn factors_override_parameters() {
        let ready = RoyaltyMath.prepare(&toml::Table::new(), &env()).unwrap();
        let row = ready
            .run_cell(&cell(&[
                ("seed", Value::Int(0)),
                ("requests", Value::Int(200)),
                ("replay_fraction", Value::Int(1)),
            ]))
            .unwrap();
        assert_eq!(row["receipts"], Value::Int(200));
        assert_eq!(row["replays_rejected"], Value::Int(200));
        let bad = ready.run_cell(&cell(&[("seed", Value::Int(0)), ("requests", Value::Int(-1))]));
        assert!(bad.unwrap_err().to_string().contains("`requests`"));
    }

    #[test]
    fn same_cell_gives_the_same_row() {
        let ready = RoyaltyMath.prepare(&table("requests = 300"), &env()).unwrap();
        let c = cell(&[("seed", Value::Int(4))]);
        assert_eq!(ready.run_cell(&c).unwrap(), ready.run_cell(&c).unwrap());
    }

    #[test]
    fn check_params_accepts_defaults_and_names_bad_keys() {
        assert_eq!(RoyaltyMath.check_params(&toml::Table::new()), Ok(()));
        let e = RoyaltyMath.check_params(&table("requests = 10\nfanout = 3")).unwrap_err();
        assert!(e.contains("fanout"), "{e}");
        let e = RoyaltyMath.check_params(&table("requests = \"many\"")).unwrap_err();
        assert!(e.contains("requests"), "{e}");
        let e = RoyaltyMath.check_params(&table("trainer_share_percent = 130")).unwrap_err();
        assert!(e.contains("trainer_share_percent"), "{e}");
        let e = RoyaltyMath.check_params(&table("replay_fraction = 2.0")).unwrap_err();
        assert!(e.contains("replay_fraction"), "{e}");
    }

    #[test]
    fn a_cell_without_a_seed_is_an_error() {
        let ready = RoyaltyMath.prepare(&toml::Table::new(), &env()).unwrap();
        assert!(ready.run_cell(&cell(&[])).unwrap_err().to_string().contains("seed"));
    }

    #[test]
    fn the_catalogue_spec_validates_runs_at_tiny_and_plots() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bets/14_royalty_math.toml");
        let bet = crate::spec::load(&path).unwrap();
        assert_eq!(bet.experiment.kind(), "royalty-math");
        let plan = bet.plan("tiny").unwrap();
        let ready = bet.experiment.prepare(&plan.params, &env()).unwrap();
        let mut rows = Vec::new();
        for (index, point) in plan.points.iter().enumerate() {
            let c = Cell { index, factors: point.clone(), key: format!("tiny-{index}") };
            let mut row = ready.run_cell(&c).unwrap();
            row.extend(point.clone());
            rows.push(row);
        }
        for p in &bet.spec.plots {
            let opts = crate::report::plot::PlotOptions { log_y: p.log_y, ..Default::default() };
            let svg =
                crate::report::plot::metric_by_condition(&rows, &p.x, &p.y, p.series.as_deref(), "t", &opts).unwrap();
            assert_eq!(svg.matches("<circle").count(), rows.len(), "{} by {}", p.y, p.x);
        }
    }
}
