//! Rendering of results for people: plots (plotters), the catalogue's
//! Markdown and HTML pages, confirmation and retraction documents, and the
//! CI baselines `bets regress` compares against. Pure functions of rows,
//! specs and bundles; `app` decides where the output goes.

pub mod plot;

pub mod analysis;
pub mod baseline;
pub mod doc;
pub mod history;
pub mod html;
pub mod markdown;
pub mod model;
pub mod pages;
mod render;
pub mod replication;
#[cfg(test)]
mod tests;

pub use render::{HTML_DIR, Rendered, render};

/// The ledger heads recorded in a report tree (SUMMARY.json and the JSON of
/// every confirmation and retraction), for `bets verify`. A file whose
/// format version this build does not read is an error naming it (its head
/// cannot be trusted to mean what this build reads); a file that is not
/// JSON or records no head is skipped.
pub fn recorded_heads(
    reports_dir: &std::path::Path,
) -> Vec<Result<(std::path::PathBuf, crate::registry::LedgerHead), crate::error::FormatError>> {
    let summary = crate::services::Paths::summary_json(reports_dir);
    let mut files = vec![(summary, "SUMMARY.json", pages::SUMMARY_FORMATS)];
    for sub in crate::services::Paths::report_record_dirs(reports_dir) {
        let mut found: Vec<_> = std::fs::read_dir(sub)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        found.sort();
        files.extend(found.into_iter().map(|p| (p, "report document", history::DOCUMENT_FORMATS)));
    }
    files
        .into_iter()
        .filter_map(|(p, what, supported)| {
            let bytes = std::fs::read(&p).ok()?;
            if let Err(e) = crate::error::check_json_format(what, p.display(), &bytes, supported) {
                return Some(Err(e));
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let head = serde_json::from_value(v.get("ledger_head")?.clone()).ok()?;
            Some(Ok((p, head)))
        })
        .collect()
}

use crate::spec::{Bet, Plan, PlotKind, PlotSpec};
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
            .map(|m| PlotSpec {
                kind: PlotKind::Points,
                by: None,
                arms: vec![],
                x: x.clone(),
                y: m.name.to_string(),
                series: None,
                log_y: false,
                reference: None,
                reference_label: None,
                title: None,
            })
            .collect()
    } else {
        bet.spec.plots.clone()
    };
    let ok: Vec<Row> =
        rows.iter().filter(|r| r.get("status").and_then(|v| v.as_str()) == Some("ok")).cloned().collect();
    let mut out = Vec::new();
    for p in specs {
        let default_title = match p.kind {
            PlotKind::WinGrid => format!(
                "bet {}: {} of {} minus {} (positive: {} lower)",
                bet.spec.number, p.y, p.arms[1], p.arms[0], p.arms[0]
            ),
            _ => format!("bet {}: {} by {}", bet.spec.number, p.y, p.x),
        };
        let title = p.title.clone().unwrap_or(default_title);
        let series = p.series.as_deref().unwrap_or_default();
        let (name, svg) = match p.kind {
            PlotKind::Points => {
                let opts = points_options(&p);
                (
                    format!("{}_by_{}.svg", p.y, p.x),
                    plot::metric_by_condition(&ok, &p.x, &p.y, p.series.as_deref(), &title, &opts)?,
                )
            }
            PlotKind::Heatmap => {
                (format!("{}_heatmap_{series}_by_{}.svg", p.y, p.x), plot::heatmap(&ok, series, &p.x, &p.y, &title)?)
            }
            PlotKind::WinGrid => {
                let by = p.by.as_deref().unwrap_or_default();
                let factors: Vec<&String> = plan.grid.keys().collect();
                let diffs = arm_differences(&ok, &factors, by, &p.arms[0], &p.arms[1], &p.y);
                (
                    format!("{}_win_grid_{series}_by_{}.svg", p.y, p.x),
                    plot::heatmap(&diffs, series, &p.x, &p.y, &title)?,
                )
            }
        };
        out.push((name, svg));
    }
    Ok(out)
}

/// How a `points` plot spec is drawn: its axis and its reference line.
pub fn points_options(p: &PlotSpec) -> plot::PlotOptions {
    let reference = p
        .reference
        .map(|r| (r, p.reference_label.clone().unwrap_or_else(|| format!("reference = {}", plot::fmt_num(r)))));
    plot::PlotOptions { log_y: p.log_y, reference, ..Default::default() }
}

/// Rows of `y(reference) - y(challenger)` for every pair of cells that agree
/// on every grid factor except `by`:
/// positive where the challenger has the lower value (wins, for a loss or a
/// perplexity).
fn arm_differences(
    rows: &[Row],
    grid_factors: &[&String],
    by: &str,
    challenger: &str,
    reference: &str,
    y: &str,
) -> Vec<Row> {
    let is_arm = |r: &Row, a: &str| r.get(by).and_then(|v| v.as_str()) == Some(a);
    let factors = |r: &Row| -> Vec<String> {
        grid_factors
            .iter()
            .filter(|f| f.as_str() != by)
            .map(|f| r.get(f.as_str()).map(|v| v.to_string()).unwrap_or_default())
            .collect()
    };
    let mut out = Vec::new();
    for c in rows.iter().filter(|r| is_arm(r, challenger)) {
        let key = factors(c);
        if let Some(r) = rows.iter().find(|r| is_arm(r, reference) && factors(r) == key)
            && let (Some(a), Some(b)) = (c.get(y).and_then(|v| v.as_f64()), r.get(y).and_then(|v| v.as_f64()))
        {
            let mut row = c.clone();
            row.insert(y.to_string(), crate::table::Value::Float(b - a));
            out.push(row);
        }
    }
    out
}
