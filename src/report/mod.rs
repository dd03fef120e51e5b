//! Rendering of results for people: plots (plotters) and, later, Markdown
//! and HTML pages. Pure functions of rows and specs; `app` decides where
//! the output goes.

pub mod plot;

// Catalogue pages, statistics per run, confirmations and retractions, CI
// baselines (issue 5).
pub mod analysis;
pub mod baseline;
pub mod doc;
pub mod history;
pub mod html;
pub mod markdown;
pub mod model;
pub mod pages;
mod render;
#[cfg(test)]
mod tests;

pub use render::{HTML_DIR, Rendered, render};

use crate::spec::{Bet, Plan, PlotSpec};
use crate::table::{ColumnType, Row};

/// The plots of a bundle: those the spec declares, else one per numeric
/// metric against the first factor that is not `seed` (or `seed` itself).
/// Returns (file name, SVG text) pairs.
pub fn bundle_plots(bet: &Bet, plan: &Plan, rows: &[Row]) -> anyhow::Result<Vec<(String, String)>> {
    let specs: Vec<PlotSpec> = if bet.spec.plots.is_empty() {
        let x = plan.grid.keys().find(|k| k.as_str() != "seed").or_else(|| plan.grid.keys().next());
        let Some(x) = x else { return Ok(vec![]) };
        bet.experiment
            .metrics()
            .iter()
            .filter(|m| matches!(m.kind, ColumnType::Float | ColumnType::Int))
            .map(|m| PlotSpec { x: x.clone(), y: m.name.to_string(), series: None, log_y: false, title: None })
            .collect()
    } else {
        bet.spec.plots.clone()
    };
    let ok: Vec<Row> =
        rows.iter().filter(|r| r.get("status").and_then(|v| v.as_str()) == Some("ok")).cloned().collect();
    let mut out = Vec::new();
    for p in specs {
        let title = p.title.clone().unwrap_or_else(|| format!("bet {}: {} by {}", bet.spec.number, p.y, p.x));
        let opts = plot::PlotOptions { log_y: p.log_y, ..Default::default() };
        let svg = plot::metric_by_condition(&ok, &p.x, &p.y, p.series.as_deref(), &title, &opts)?;
        out.push((format!("{}_by_{}.svg", p.y, p.x), svg));
    }
    Ok(out)
}
