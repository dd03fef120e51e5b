use super::*;
use crate::table::Table;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn the_sign_test_of_12_wins_in_15_is_the_exact_two_sided_tail() {
    // 2 * (C(15,12) + C(15,13) + C(15,14) + C(15,15)) / 2^15 = 2 * 576 / 32768
    assert_eq!(sign_test(12, 15), 0.03515625, "exact to the bit");
    assert!(close(sign_test(3, 15), 0.03515625), "symmetric");
    assert!(close(sign_test(15, 15), 2.0 / 32768.0));
    assert!(close(sign_test(9, 15), 0.60723876953125), "{}", sign_test(9, 15));
}

#[test]
fn a_hundred_trials_take_the_log_space_path_and_agree_with_exact_arithmetic() {
    // sum of C(100, i) / 2^100 over |i - 50| >= 10, computed with big integers
    assert!((sign_test(60, 100) - 0.05688793364098078).abs() < 1e-12, "{}", sign_test(60, 100));
    assert!((sign_test(50, 100) - 1.0).abs() < 1e-12);
}

#[test]
fn an_even_split_and_no_trials_give_p_one() {
    assert_eq!(sign_test(5, 10), 1.0);
    assert_eq!(sign_test(0, 0), 1.0);
}

#[test]
fn an_asymmetric_binomial_sums_every_outcome_no_likelier_than_the_observed() {
    // binom.test(3, 10, p = 0.2) in R: 1 - P(X = 1) - P(X = 2)
    let p1 = 10.0 * 0.2 * 0.8f64.powi(9);
    let p2 = 45.0 * 0.04 * 0.8f64.powi(8);
    assert!(close(binomial_two_sided(3, 10, 0.2), 1.0 - p1 - p2), "{}", binomial_two_sided(3, 10, 0.2));
    assert_eq!(binomial_two_sided(0, 4, 0.0), 1.0);
    assert_eq!(binomial_two_sided(1, 4, 0.0), 0.0);
}

#[test]
fn holm_scales_the_sorted_p_values_and_keeps_them_monotone() {
    // sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
    let expected = [0.03, 0.06, 0.06, 0.02];
    for (a, e) in adj.iter().zip(expected) {
        assert!(close(*a, e), "{adj:?}");
    }
    assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0], "capped at one");
    assert!(holm(&[]).is_empty());
}

#[test]
fn percentiles_interpolate_between_order_statistics_like_numpy() {
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    assert!(close(percentile(&hundred, 0.975), 97.525));
    assert!(close(percentile(&hundred, 0.025), 3.475));
    assert_eq!(percentile(&[7.0], 0.5), 7.0);
}

fn paired_cells() -> Table {
    // arm a beats arm b on seeds 0, 1, 2 and loses on 3, 4.
    let cols = vec![
        Column { name: "arm".into(), kind: ColumnType::Str },
        Column { name: "seed".into(), kind: ColumnType::Int },
        Column { name: "x".into(), kind: ColumnType::Float },
    ];
    let mut rows = Vec::new();
    for seed in 0..5i64 {
        let a = if seed < 3 { 1.0 } else { 3.0 };
        for (arm, x) in [("a", a), ("b", 2.0)] {
            rows.push(Row::from([
                ("arm".to_string(), Value::from(arm)),
                ("seed".to_string(), Value::Int(seed)),
                ("x".to_string(), Value::Float(x)),
            ]));
        }
    }
    Table::from_rows(&cols, &rows).unwrap()
}

const PAIRS: &str = "SELECT COUNT(*) FROM cells a JOIN cells b ON a.seed = b.seed WHERE a.arm = 'a' AND b.arm = 'b'";
const WINS: &str =
    "SELECT COUNT(*) FROM cells a JOIN cells b ON a.seed = b.seed WHERE a.arm = 'a' AND b.arm = 'b' AND a.x < b.x";

fn small() -> Bootstrap {
    Bootstrap { seed: 7, resamples: 200, level: 0.95 }
}

#[test]
fn clustered_resampling_keeps_joined_arms_paired() {
    let by_seed = Resampling::Clusters { factor: "seed".into() };
    let r = bootstrap(&paired_cells(), &by_seed, &[("pairs", PAIRS), ("wins", WINS)], &small(), "run");
    let pairs = r["pairs"].clone().unwrap().unwrap();
    assert_eq!((pairs.low, pairs.high, pairs.estimate), (5.0, 5.0, Some(5.0)), "every resample has 5 pairs");
    assert_eq!((pairs.units, pairs.defined, pairs.resamples), (5, 200, 200));
    let wins = r["wins"].clone().unwrap().unwrap();
    assert_eq!(wins.estimate, Some(3.0));
    assert!(wins.low < 3.0 && wins.high > 3.0 && wins.low >= 0.0 && wins.high <= 5.0, "{wins:?}");
    // Row resampling breaks pairs: the number of joined pairs varies.
    let r = bootstrap(&paired_cells(), &Resampling::Rows, &[("pairs", PAIRS)], &small(), "run");
    let pairs = r["pairs"].clone().unwrap().unwrap();
    assert!(pairs.low < pairs.high, "{pairs:?}");
}

#[test]
fn the_bootstrap_is_a_function_of_its_seed_and_stream() {
    let by_seed = Resampling::Clusters { factor: "seed".into() };
    let q = [("wins", WINS), ("mean", "SELECT AVG(x) FROM cells")];
    let a = bootstrap(&paired_cells(), &by_seed, &q, &small(), "run-1");
    let b = bootstrap(&paired_cells(), &by_seed, &q, &small(), "run-1");
    assert_eq!(a, b);
    let c = bootstrap(&paired_cells(), &by_seed, &q, &Bootstrap { seed: 8, ..small() }, "run-1");
    assert_ne!(a, c, "another seed draws other tables");
}

#[test]
fn two_clusters_of_zero_and_one_give_the_interval_zero_to_one() {
    // The mean of two draws from {0, 1} is 0, 0.5 or 1 with chances 1/4, 1/2,
    // 1/4: with 200 resamples both the 2.5% and 97.5% ends fall on the extremes.
    let cols = vec![
        Column { name: "seed".into(), kind: ColumnType::Int },
        Column { name: "x".into(), kind: ColumnType::Float },
    ];
    let rows: Vec<Row> = [(0, 0.0), (1, 1.0)]
        .iter()
        .map(|(s, x)| Row::from([("seed".to_string(), Value::Int(*s)), ("x".to_string(), Value::Float(*x))]))
        .collect();
    let df = Table::from_rows(&cols, &rows).unwrap();
    let r = bootstrap(
        &df,
        &Resampling::Clusters { factor: "seed".into() },
        &[("m", "SELECT AVG(x) FROM cells")],
        &small(),
        "s",
    );
    let m = r["m"].clone().unwrap().unwrap();
    assert_eq!((m.estimate, m.low, m.high), (Some(0.5), 0.0, 1.0));
}

#[test]
fn null_and_non_numeric_quantities_are_reported_not_guessed() {
    let q = [
        ("none", "SELECT MAX(x) FROM cells WHERE arm = 'c'"),
        ("name", "SELECT MIN(arm) FROM cells"),
        ("bad", "SELECT nope FROM cells"),
    ];
    let r = bootstrap(&paired_cells(), &Resampling::Rows, &q, &small(), "s");
    assert_eq!(r["none"], Ok(None));
    assert!(r["name"].clone().unwrap_err().to_string().contains("not a number"));
    assert!(r["bad"].is_err());
    let r = bootstrap(
        &paired_cells(),
        &Resampling::Clusters { factor: "slice".into() },
        &[("m", "SELECT AVG(x) FROM cells")],
        &small(),
        "s",
    );
    assert!(r["m"].clone().unwrap_err().to_string().contains("no column `slice`"));
}

#[test]
fn a_criterion_is_fragile_when_an_interval_end_crosses_its_threshold() {
    let uses = BTreeMap::from([("wins".to_string(), Some(Value::Int(12)))]);
    let crossing = BTreeMap::from([("wins".to_string(), (10.0, 14.0))]);
    let flip = criterion_flip("wins >= 12", &uses, &crossing).unwrap().unwrap();
    assert_eq!(flip, Flip { quantity: "wins".into(), at: 10.0, holds: Some(false) });
    let inside = BTreeMap::from([("wins".to_string(), (12.0, 15.0))]);
    assert_eq!(criterion_flip("wins >= 12", &uses, &inside).unwrap(), None);
    assert_eq!(criterion_flip("wins >= 12", &uses, &BTreeMap::new()).unwrap(), None, "no interval, nothing moves");
}

#[test]
fn only_the_moved_quantity_leaves_its_observed_value() {
    let uses = BTreeMap::from([("a".to_string(), Some(Value::Float(1.0))), ("b".to_string(), Some(Value::Int(0)))]);
    let iv = BTreeMap::from([("a".to_string(), (0.5, 1.5)), ("b".to_string(), (0.0, 2.0))]);
    let flip = criterion_flip("a < 2 AND b = 0", &uses, &iv).unwrap().unwrap();
    assert_eq!((flip.quantity.as_str(), flip.at), ("b", 2.0));
}
