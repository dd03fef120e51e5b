//! Plots of a results table as SVG text, so a reader sees every cell behind a
//! verdict (not just a summary number) and the same table always gives the
//! same bytes (plots are committed next to signed results).
//!
//! Everything here is a pure function of rows; writing the file is the
//! caller's business. Text is written as SVG `<text>`, so no font is needed
//! at render time.

use std::collections::BTreeMap;

use std::ops::Range;

use anyhow::{anyhow, bail};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::table::{Row, Value};

/// Presentation choices for [`metric_by_condition`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// Plot the metric on a log10 axis, for quantities that span orders of
    /// magnitude (perplexities, losses, byte sizes); every value must then
    /// be positive.
    pub log_y: bool,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// A labelled horizontal line at this value (a threshold the cells are
    /// judged by), and its label.
    pub reference: Option<(f64, String)>,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions { log_y: false, width: 800, height: 500, reference: None }
    }
}

/// Colour-blind-safe (Okabe-Ito) colours, cycled for series.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// A linear axis whose ticks sit exactly where the categories are (plotters'
/// own f64 axis picks "nice" numbers, which land between categories).
struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let t = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + ((limit.1 - limit.0) as f64 * t + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.max_num_points() == 0 || hint.weight().allow_light_points() { vec![] } else { self.ticks.clone() }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// Round-number ticks (1, 2 or 5 times a power of ten apart) covering
/// `lo..=hi`, about `target` of them.
fn linear_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let raw = (hi - lo) / target.max(1) as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return vec![lo];
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // Multiply rather than accumulate, so ticks are exact round numbers.
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Ticks for a log10 axis, as log10 values: 1-2-5 times powers of ten when
/// at least three fall in range, else every integer multiple, else linear
/// round numbers.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = lo.floor() as i32..=hi.ceil() as i32;
    for mantissas in [&[1.0, 2.0, 5.0][..], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0][..]] {
        let ticks: Vec<f64> = decades
            .clone()
            .flat_map(|d| mantissas.iter().map(move |m| (m * 10f64.powi(d)).log10()))
            .filter(|t| (lo..=hi).contains(t))
            .collect();
        if ticks.len() >= 3 {
            return ticks;
        }
    }
    linear_ticks(10f64.powf(lo), 10f64.powf(hi), 6).into_iter().filter(|v| *v > 0.0).map(f64::log10).collect()
}

/// Fail unless some row has column `name`, listing the columns there are.
fn require_column(rows: &[Row], name: &str) -> anyhow::Result<()> {
    if rows.iter().any(|r| r.contains_key(name)) {
        return Ok(());
    }
    let mut names: Vec<&str> = rows.iter().flat_map(|r| r.keys().map(String::as_str)).collect();
    names.sort_unstable();
    names.dedup();
    bail!("no column `{name}` in the table (columns: {})", names.join(", "))
}

/// The value of column `name` in row `i`, or an error naming both.
fn cell<'r>(rows: &'r [Row], i: usize, name: &str) -> anyhow::Result<&'r Value> {
    rows[i].get(name).ok_or_else(|| anyhow!("row {i} has no value in column `{name}`"))
}

/// The distinct values of a factor in display order: numerically when every
/// value is a number, otherwise by text. Returns the labels and each row's
/// position among them.
fn categories(rows: &[Row], name: &str) -> anyhow::Result<(Vec<String>, Vec<usize>)> {
    let values: Vec<&Value> = (0..rows.len()).map(|i| cell(rows, i, name)).collect::<anyhow::Result<_>>()?;
    let numeric = values.iter().all(|v| v.as_f64().is_some());
    let mut distinct: Vec<(f64, String)> =
        values.iter().map(|v| (if numeric { v.as_f64().unwrap_or(0.0) } else { 0.0 }, v.to_string())).collect();
    distinct.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    distinct.dedup_by(|a, b| a.1 == b.1);
    let labels: Vec<String> = distinct.into_iter().map(|(_, l)| l).collect();
    let index: BTreeMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let positions = values.iter().map(|v| index[v.to_string().as_str()]).collect();
    Ok((labels, positions))
}

/// A short, stable rendering of a number for axis labels and cell text.
pub(crate) fn fmt_num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The median of a non-empty slice (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// One point per row of metric `y` against factor `x`, the median of each
/// group marked, optionally one colour per value of factor `series`.
///
/// A strip plot, because a bet's criteria are read over cells: the plot
/// shows every cell (e.g. every seed) rather than a bar that hides the
/// spread. `x` is treated as categorical (numeric values are ordered
/// numerically); within a category the points of each series are spread
/// side by side in row order, and a thick bar marks their median.
/// Non-finite values cannot be drawn: they are left out and counted in the
/// caption. No rows (every cell failed) gives a captioned, empty picture
/// rather than an error, so one failed sweep does not hide the others'
/// plots.
pub fn metric_by_condition(
    rows: &[Row],
    x: &str,
    y: &str,
    series: Option<&str>,
    title: &str,
    opts: &PlotOptions,
) -> anyhow::Result<String> {
    if rows.is_empty() {
        return empty_picture(&format!("{title} (no data)"), opts);
    }
    for name in [Some(x), Some(y), series].into_iter().flatten() {
        require_column(rows, name)?;
    }
    let (xlabels, xpos) = categories(rows, x)?;
    let (slabels, spos) = match series {
        Some(s) => categories(rows, s)?,
        None => (vec![String::new()], vec![0; rows.len()]),
    };

    // Group finite values by (x category, series), in row order.
    let mut groups: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    let mut omitted = 0;
    for i in 0..rows.len() {
        let v = cell(rows, i, y)?;
        let Some(val) = v.as_f64() else { bail!("column `{y}` is not numeric: row {i} holds {v:?}") };
        if !val.is_finite() {
            omitted += 1;
            continue;
        }
        let val = if opts.log_y {
            if val <= 0.0 {
                bail!("a log axis needs positive values, but column `{y}` is {val} in row {i}");
            }
            val.log10()
        } else {
            val
        };
        groups.entry((xpos[i], spos[i])).or_default().push(val);
    }
    let reference = match &opts.reference {
        Some((r, _)) if opts.log_y && *r <= 0.0 => bail!("a log axis cannot draw the reference line at {r}"),
        Some((r, label)) => Some((if opts.log_y { r.log10() } else { *r }, label.as_str())),
        None => None,
    };
    // The reference line is part of the range, so it is always in view.
    let all: Vec<f64> = groups.values().flatten().copied().chain(reference.map(|(r, _)| r)).collect();
    let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let (lo, hi) = if all.is_empty() {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 { lo.abs() * 0.1 } else { 1.0 };
        (lo - pad, hi + pad)
    } else {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    };

    let nx = xlabels.len();
    let ns = slabels.len();
    // With a legend, leave room above the data for it: it sits in the upper
    // right, and must not hide the points there.
    let hi = if series.is_some() {
        let frac = ((ns as f64) * 22.0 + 24.0) / (opts.height as f64 - 100.0).max(100.0);
        let frac = frac.min(0.6);
        hi + (hi - lo) * frac / (1.0 - frac)
    } else {
        hi
    };
    let caption = if omitted > 0 { format!("{title} ({omitted} non-finite omitted)") } else { title.to_string() };
    let ydesc = if opts.log_y { format!("{y} (log scale)") } else { y.to_string() };
    let slot = 0.8 / ns as f64;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (opts.width, opts.height)).into_drawing_area();
        root.fill(&WHITE)?;
        let xticks: Vec<f64> = (0..nx).map(|i| i as f64).collect();
        let yticks = if opts.log_y { log_ticks(lo, hi) } else { linear_ticks(lo, hi, 8) };
        let mut chart = ChartBuilder::on(&root)
            .caption(&caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                Ticked { range: -0.5..nx as f64 - 0.5, ticks: xticks },
                Ticked { range: lo..hi, ticks: yticks },
            )?;
        let xfmt = |v: &f64| xlabels.get(v.round().max(0.0) as usize).cloned().unwrap_or_default();
        let yfmt = |v: &f64| if opts.log_y { fmt_num(10f64.powf(*v)) } else { fmt_num(*v) };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x)
            .y_desc(ydesc)
            .x_label_formatter(&xfmt)
            .y_label_formatter(&yfmt)
            .draw()?;

        for (s, label) in slabels.iter().enumerate() {
            let colour = PALETTE[s % PALETTE.len()];
            let mut points = Vec::new();
            let mut medians = Vec::new();
            for (&(xi, si), vals) in groups.range((0, s)..) {
                if si != s {
                    continue;
                }
                let centre = xi as f64 + (s as f64 - (ns as f64 - 1.0) / 2.0) * slot;
                let n = vals.len();
                for (j, &v) in vals.iter().enumerate() {
                    let offset = slot * 0.6 * ((j as f64 + 0.5) / n as f64 - 0.5);
                    points.push((centre + offset, v));
                }
                let mut sorted = vals.clone();
                medians.push((centre, median(&mut sorted)));
            }
            let drawn = chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.mix(0.8).filled())))?;
            if let Some(name) = series {
                drawn
                    .label(format!("{name} = {label}"))
                    .legend(move |(px, py)| Circle::new((px + 8, py), 4, colour.filled()));
            }
            chart.draw_series(medians.into_iter().map(|(c, m)| {
                PathElement::new(vec![(c - slot * 0.4, m), (c + slot * 0.4, m)], colour.stroke_width(3))
            }))?;
        }
        if let Some((r, label)) = reference {
            let (x0, x1) = (-0.5, nx as f64 - 0.5);
            chart.draw_series(DashedLineSeries::new([(x0, r), (x1, r)], 8, 5, BLACK.stroke_width(1)))?;
            let style = ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Bottom));
            chart.draw_series(std::iter::once(Text::new(label.to_string(), (x0 + 0.02, r), style)))?;
        }
        if series.is_some() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// A white picture with only a caption.
fn empty_picture(caption: &str, opts: &PlotOptions) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (opts.width, opts.height)).into_drawing_area();
        root.fill(&WHITE)?;
        root.titled(caption, ("sans-serif", 20))?;
        root.present()?;
    }
    Ok(svg)
}

/// A grid of coloured cells with text, shared by [`heatmap`] and
/// [`win_grid`]: `cells[r][c]` is the colour value and the text of row `r`,
/// column `c`, or `None` for a combination the table does not have.
fn draw_grid(
    title: &str,
    row_desc: &str,
    col_desc: &str,
    row_labels: &[String],
    col_labels: &[String],
    cells: &[Vec<Option<(f64, String)>>],
) -> anyhow::Result<String> {
    let (nr, nc) = (row_labels.len(), col_labels.len());
    let finite = cells.iter().flatten().flatten().map(|(v, _)| *v).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    let (light, dark) = ((247.0, 251.0, 255.0), (8.0, 48.0, 107.0));
    let shade = |v: f64| {
        let t = if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 };
        let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
        (RGBColor(mix(light.0, dark.0), mix(light.1, dark.1), mix(light.2, dark.2)), t > 0.55)
    };

    let width = (160 + 90 * nc).max(400) as u32;
    let height = (140 + 50 * nr).max(300) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let xticks: Vec<f64> = (0..nc).map(|i| i as f64 + 0.5).collect();
        let yticks: Vec<f64> = (0..nr).map(|i| i as f64 + 0.5).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(110)
            .build_cartesian_2d(
                Ticked { range: 0.0..nc as f64, ticks: xticks },
                Ticked { range: 0.0..nr as f64, ticks: yticks },
            )?;
        // Row 0 at the top, as in a printed matrix.
        let xfmt = |v: &f64| col_labels.get(v.floor().max(0.0) as usize).cloned().unwrap_or_default();
        let yfmt = |v: &f64| {
            let k = v.floor().max(0.0) as usize;
            if k < nr { row_labels[nr - 1 - k].clone() } else { String::new() }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(col_desc)
            .y_desc(row_desc)
            .x_label_formatter(&xfmt)
            .y_label_formatter(&yfmt)
            .draw()?;
        for (r, row) in cells.iter().enumerate() {
            for (c, entry) in row.iter().enumerate() {
                let y0 = (nr - 1 - r) as f64;
                let (fill, text, on_dark) = match entry {
                    Some((v, t)) if v.is_finite() => {
                        let (colour, dark) = shade(*v);
                        (colour, t.clone(), dark)
                    }
                    Some((_, t)) => (RGBColor(230, 230, 230), t.clone(), false),
                    None => (RGBColor(230, 230, 230), "n/a".to_string(), false),
                };
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(c as f64, y0), (c as f64 + 1.0, y0 + 1.0)],
                    fill.filled(),
                )))?;
                let ink = if on_dark { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    text,
                    (c as f64 + 0.5, y0 + 0.5),
                    ("sans-serif", 14).into_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center)),
                )))?;
            }
        }
        root.present()?;
    }
    Ok(svg)
}

/// A matrix of metric `value` by two factors (e.g. adapter owner x eval
/// user for a confusion matrix), coloured from light (lowest) to dark
/// (highest) with the number written in each cell. Rows sharing a
/// (row, column) pair are summarised by their median, so a matrix over
/// several seeds shows the typical cell; combinations without rows read
/// "n/a".
pub fn heatmap(rows: &[Row], row_factor: &str, col_factor: &str, value: &str, title: &str) -> anyhow::Result<String> {
    if rows.is_empty() {
        bail!("no rows to plot");
    }
    for name in [row_factor, col_factor, value] {
        require_column(rows, name)?;
    }
    let (rlabels, rpos) = categories(rows, row_factor)?;
    let (clabels, cpos) = categories(rows, col_factor)?;
    let mut groups: BTreeMap<(usize, usize), Vec<f64>> = BTreeMap::new();
    for i in 0..rows.len() {
        let v = cell(rows, i, value)?;
        let Some(val) = v.as_f64() else { bail!("column `{value}` is not numeric: row {i} holds {v:?}") };
        groups.entry((rpos[i], cpos[i])).or_default().push(val);
    }
    let cells: Vec<Vec<Option<(f64, String)>>> = (0..rlabels.len())
        .map(|r| {
            (0..clabels.len())
                .map(|c| {
                    groups.get(&(r, c)).map(|vals| {
                        let m = median(&mut vals.clone());
                        (m, fmt_num(m))
                    })
                })
                .collect()
        })
        .collect();
    draw_grid(title, row_factor, col_factor, &rlabels, &clabels, &cells)
}

/// Pairwise wins between the arms of an experiment, cell by cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinCounts {
    /// The arms, in display order.
    pub arms: Vec<String>,
    /// `wins[a][b]`: matched cells where arm `a` strictly beat arm `b`.
    pub wins: Vec<Vec<usize>>,
    /// `compared[a][b]`: matched cells where both arms have a value.
    pub compared: Vec<Vec<usize>>,
}

/// Count, for every ordered pair of arms, the cells in which one beats the
/// other: rows are matched on the factors `match_on` (e.g. seed and eval
/// slice), the catalogue's definition of a win. Non-finite values never
/// win and are never beaten. Two rows of the same arm in one match group
/// are an error, since the comparison would be ambiguous.
pub fn win_counts(
    rows: &[Row],
    arm: &str,
    match_on: &[&str],
    metric: &str,
    lower_is_better: bool,
) -> anyhow::Result<WinCounts> {
    if rows.is_empty() {
        bail!("no rows to compare");
    }
    for name in std::iter::once(arm).chain(match_on.iter().copied()).chain(std::iter::once(metric)) {
        require_column(rows, name)?;
    }
    let (arms, apos) = categories(rows, arm)?;
    let mut groups: BTreeMap<Vec<String>, BTreeMap<usize, f64>> = BTreeMap::new();
    for i in 0..rows.len() {
        let key = match_on.iter().map(|f| cell(rows, i, f).map(Value::to_string)).collect::<anyhow::Result<_>>()?;
        let v = cell(rows, i, metric)?;
        let Some(val) = v.as_f64() else { bail!("column `{metric}` is not numeric: row {i} holds {v:?}") };
        let group = groups.entry(key).or_default();
        if group.insert(apos[i], val).is_some() {
            bail!("arm `{}` has two rows with the same {} (row {i})", arms[apos[i]], match_on.join(", "));
        }
    }
    let n = arms.len();
    let mut wins = vec![vec![0; n]; n];
    let mut compared = vec![vec![0; n]; n];
    for group in groups.values() {
        for (&a, &va) in group {
            for (&b, &vb) in group {
                if a == b {
                    continue;
                }
                compared[a][b] += 1;
                let better = if lower_is_better { va < vb } else { va > vb };
                if better && va.is_finite() && vb.is_finite() {
                    wins[a][b] += 1;
                }
            }
        }
    }
    Ok(WinCounts { arms, wins, compared })
}

/// The [`win_counts`] matrix as a picture: cell (row A, column B) reads
/// "wins / compared" for A over B and is shaded by the win fraction.
pub fn win_grid(
    rows: &[Row],
    arm: &str,
    match_on: &[&str],
    metric: &str,
    lower_is_better: bool,
    title: &str,
) -> anyhow::Result<String> {
    let w = win_counts(rows, arm, match_on, metric, lower_is_better)?;
    let n = w.arms.len();
    let cells: Vec<Vec<Option<(f64, String)>>> = (0..n)
        .map(|a| {
            (0..n)
                .map(|b| {
                    if a == b {
                        return Some((f64::NAN, "-".to_string()));
                    }
                    (w.compared[a][b] > 0).then(|| {
                        let frac = w.wins[a][b] as f64 / w.compared[a][b] as f64;
                        (frac, format!("{}/{}", w.wins[a][b], w.compared[a][b]))
                    })
                })
                .collect()
        })
        .collect();
    draw_grid(title, &format!("{arm} (wins)"), &format!("{arm} (beaten)"), &w.arms, &w.arms, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    /// plotters writes each label on its own line inside `<text>`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    fn plot(rows: &[Row], x: &str, y: &str, series: Option<&str>, title: &str) -> anyhow::Result<String> {
        metric_by_condition(rows, x, y, series, title, &PlotOptions::default())
    }

    fn seeds_by_arm() -> Vec<Row> {
        let mut rows = Vec::new();
        for (a, arm) in ["norm-only", "full"].iter().enumerate() {
            for seed in 0..5i64 {
                for slice in ["A", "B"] {
                    let ppl = 10.0 + a as f64 * 2.0 + seed as f64 * 0.1 + if slice == "B" { 0.5 } else { 0.0 };
                    rows.push(row(&[
                        ("arm", Value::from(*arm)),
                        ("seed", Value::Int(seed)),
                        ("slice", Value::from(slice)),
                        ("ppl", Value::Float(ppl)),
                    ]));
                }
            }
        }
        rows
    }

    #[test]
    fn strip_plot_is_svg_with_the_title_and_one_point_per_row() {
        let rows = seeds_by_arm();
        let svg = plot(&rows, "arm", "ppl", None, "Held-out ppl by arm").unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Held-out ppl by arm"));
        assert_eq!(svg.matches("<circle").count(), rows.len());
        assert!(has_text(&svg, "norm-only") && has_text(&svg, "full"));
    }

    #[test]
    fn series_add_one_legend_marker_each() {
        let rows = seeds_by_arm();
        let svg = plot(&rows, "arm", "ppl", Some("slice"), "by slice").unwrap();
        assert_eq!(svg.matches("<circle").count(), rows.len() + 2);
        assert!(has_text(&svg, "slice = A") && has_text(&svg, "slice = B"));
    }

    #[test]
    fn plots_are_deterministic() {
        let rows = seeds_by_arm();
        let a = plot(&rows, "seed", "ppl", Some("arm"), "t").unwrap();
        let b = plot(&rows, "seed", "ppl", Some("arm"), "t").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            heatmap(&rows, "arm", "slice", "ppl", "h").unwrap(),
            heatmap(&rows, "arm", "slice", "ppl", "h").unwrap()
        );
    }

    #[test]
    fn errors_name_the_missing_column() {
        let rows = seeds_by_arm();
        let e = plot(&rows, "arm", "bpb", None, "t").unwrap_err().to_string();
        assert!(e.contains("`bpb`") && e.contains("ppl"), "{e}");
        let e = plot(&rows, "user", "ppl", None, "t").unwrap_err().to_string();
        assert!(e.contains("`user`"), "{e}");
        let e = plot(&rows, "arm", "ppl", Some("lr"), "t").unwrap_err().to_string();
        assert!(e.contains("`lr`"), "{e}");
        let e = heatmap(&rows, "arm", "eval", "ppl", "t").unwrap_err().to_string();
        assert!(e.contains("`eval`"), "{e}");
        let e = plot(&rows, "seed", "arm", None, "t").unwrap_err().to_string();
        assert!(e.contains("`arm` is not numeric"), "{e}");
    }

    #[test]
    fn log_axis_refuses_non_positive_values_and_labels_the_axis() {
        let mut rows = seeds_by_arm();
        let svg =
            metric_by_condition(&rows, "arm", "ppl", None, "t", &PlotOptions { log_y: true, ..Default::default() })
                .unwrap();
        assert!(svg.contains("ppl (log scale)"));
        rows[0].insert("ppl".into(), Value::Float(0.0));
        let e = metric_by_condition(&rows, "arm", "ppl", None, "t", &PlotOptions { log_y: true, ..Default::default() })
            .unwrap_err();
        assert!(e.to_string().contains("row 0"), "{e}");
    }

    #[test]
    fn a_reference_line_is_drawn_labelled_and_kept_in_view() {
        let rows = seeds_by_arm();
        let plain = plot(&rows, "arm", "ppl", None, "t").unwrap();
        let opts = PlotOptions { reference: Some((1000.0, "quorum = 1000".into())), ..Default::default() };
        let svg = metric_by_condition(&rows, "arm", "ppl", None, "t", &opts).unwrap();
        assert!(has_text(&svg, "quorum = 1000"), "the label is written");
        assert!(
            svg.contains("stroke-dasharray") || svg.matches("<polyline").count() > plain.matches("<polyline").count()
        );
        // Every ppl is below 20: the axis stretches up to the line.
        assert!(has_text(&svg, "1000") && !has_text(&plain, "1000"));
        assert_eq!(svg.matches("<circle").count(), rows.len());
        let log = PlotOptions { log_y: true, reference: Some((0.0, "zero".into())), ..Default::default() };
        let e = metric_by_condition(&rows, "arm", "ppl", None, "t", &log).unwrap_err().to_string();
        assert!(e.contains("reference line at 0"), "{e}");
    }

    #[test]
    fn no_rows_give_a_captioned_empty_picture() {
        let svg = plot(&[], "arm", "ppl", None, "Nothing ran").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Nothing ran (no data)"));
        assert_eq!(svg.matches("<circle").count(), 0);
    }

    #[test]
    fn ticks_are_round_numbers() {
        let labels: Vec<String> = linear_ticks(0.05, 0.95, 8).into_iter().map(fmt_num).collect();
        assert_eq!(labels, ["0.2", "0.4", "0.6", "0.8"]);
        assert_eq!(linear_ticks(9.7, 15.9, 8), [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
        let decades: Vec<f64> = log_ticks(0.0, 2.0).iter().map(|t| 10f64.powf(*t).round()).collect();
        assert_eq!(decades, [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        let narrow: Vec<f64> = log_ticks(1.0, 16.5f64.log10()).iter().map(|t| 10f64.powf(*t).round()).collect();
        assert_eq!(narrow, [10.0, 12.0, 14.0, 16.0]);
    }

    #[test]
    fn non_finite_values_are_left_out_and_counted() {
        let mut rows = seeds_by_arm();
        rows[3].insert("ppl".into(), Value::Float(f64::NAN));
        let svg = plot(&rows, "arm", "ppl", None, "diverged").unwrap();
        assert_eq!(svg.matches("<circle").count(), rows.len() - 1);
        assert!(svg.contains("diverged (1 non-finite omitted)"));
    }

    #[test]
    fn numeric_categories_are_ordered_by_value() {
        let rows: Vec<Row> =
            [10i64, 2, 1].iter().map(|&k| row(&[("k", Value::Int(k)), ("y", Value::Float(k as f64))])).collect();
        let (labels, pos) = categories(&rows, "k").unwrap();
        assert_eq!(labels, ["1", "2", "10"]);
        assert_eq!(pos, [2, 1, 0]);
    }

    #[test]
    fn heatmap_writes_the_median_of_each_cell() {
        let rows = vec![
            row(&[("own", "a".into()), ("eval", "a".into()), ("ppl", Value::Float(1.0))]),
            row(&[("own", "a".into()), ("eval", "a".into()), ("ppl", Value::Float(3.0))]),
            row(&[("own", "a".into()), ("eval", "b".into()), ("ppl", Value::Float(5.5))]),
            row(&[("own", "b".into()), ("eval", "b".into()), ("ppl", Value::Float(7.0))]),
        ];
        let svg = heatmap(&rows, "own", "eval", "ppl", "Confusion").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Confusion"));
        assert!(has_text(&svg, "2") && has_text(&svg, "5.5") && has_text(&svg, "7") && has_text(&svg, "n/a"));
    }

    #[test]
    fn win_counts_match_cells_and_count_strict_wins() {
        let rows = seeds_by_arm();
        let w = win_counts(&rows, "arm", &["seed", "slice"], "ppl", true).unwrap();
        assert_eq!(w.arms, ["full", "norm-only"]);
        assert_eq!(w.wins, vec![vec![0, 0], vec![10, 0]]);
        assert_eq!(w.compared, vec![vec![0, 10], vec![10, 0]]);
        let e = win_counts(&rows, "arm", &["seed"], "ppl", true).unwrap_err().to_string();
        assert!(e.contains("two rows"), "{e}");
        let svg = win_grid(&rows, "arm", &["seed", "slice"], "ppl", true, "Wins").unwrap();
        assert!(has_text(&svg, "10/10") && has_text(&svg, "0/10"));
    }
}
