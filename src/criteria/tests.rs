use super::*;
use crate::table::{Column, ColumnType, Row, Table, Value};

fn cells() -> Table {
    // norm-only beats full on seeds 0 and 1 of slice A, loses on seed 2.
    let cols = vec![
        Column { name: "cell".into(), kind: ColumnType::Int },
        Column { name: "arm".into(), kind: ColumnType::Str },
        Column { name: "seed".into(), kind: ColumnType::Int },
        Column { name: "status".into(), kind: ColumnType::Str },
        Column { name: "ppl".into(), kind: ColumnType::Float },
    ];
    let data = [
        ("norm-only", 0, 3.0),
        ("norm-only", 1, 3.1),
        ("norm-only", 2, 3.9),
        ("full", 0, 3.5),
        ("full", 1, 3.6),
        ("full", 2, 3.2),
    ];
    let rows: Vec<Row> = data
        .iter()
        .enumerate()
        .map(|(i, (arm, seed, ppl))| {
            Row::from([
                ("cell".to_string(), Value::Int(i as i64)),
                ("arm".to_string(), Value::from(*arm)),
                ("seed".to_string(), Value::Int(*seed)),
                ("status".to_string(), Value::from("ok")),
                ("ppl".to_string(), Value::Float(*ppl)),
            ])
        })
        .collect();
    Table::from_rows(&cols, &rows).unwrap()
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const WINS: &str = "SELECT COUNT(*) FROM cells n JOIN cells f ON n.seed = f.seed \
                    WHERE n.arm = 'norm-only' AND f.arm = 'full' AND n.ppl < f.ppl";

fn full_counts() -> CellCounts {
    CellCounts { planned: 6, ok: 6, failed: 0 }
}

#[test]
fn wins_between_arms_are_counted_by_a_sql_join() {
    let q = quantities(&[("wins", WINS)]);
    let set =
        CriteriaSet { quantities: &q, strict: "wins >= 3", lenient: Some("wins >= 2"), catastrophic: Some("wins < 1") };
    let r = decide(&set, &cells(), full_counts());
    assert_eq!(r.quantities["wins"].value, Some(Value::Int(2)));
    assert_eq!(r.verdict, Verdict::Lenient);
    let order: Vec<_> = r.criteria.iter().map(|c| (c.level.as_str(), c.holds)).collect();
    assert_eq!(order, vec![("catastrophic", Some(false)), ("strict", Some(false)), ("lenient", Some(true))]);
    assert_eq!(r.criteria[1].uses.get("wins"), Some(&Some(Value::Int(2))));
}

#[test]
fn grouped_medians_compare_arms_through_a_cte() {
    let sql = "WITH m AS (SELECT arm, MEDIAN(ppl) AS p FROM cells GROUP BY arm) \
               SELECT n.p / f.p FROM m n JOIN m f ON 1 = 1 WHERE n.arm = 'norm-only' AND f.arm = 'full'";
    let q = quantities(&[("ratio", sql)]);
    let set = CriteriaSet { quantities: &q, strict: "ratio < 0.95", lenient: None, catastrophic: None };
    let r = decide(&set, &cells(), full_counts());
    let ratio = r.quantities["ratio"].value.as_ref().and_then(Value::as_f64).unwrap();
    assert!((ratio - 3.1 / 3.5).abs() < 1e-12, "{ratio}");
    assert_eq!(r.verdict, Verdict::Strict);
}

#[test]
fn catastrophic_is_decided_before_strict() {
    let q = quantities(&[("n", "SELECT COUNT(*) FROM cells")]);
    let set = CriteriaSet { quantities: &q, strict: "n = 6", lenient: None, catastrophic: Some("n > 5") };
    assert_eq!(decide(&set, &cells(), full_counts()).verdict, Verdict::Catastrophic);
}

#[test]
fn no_criterion_holding_is_a_fail() {
    let q = quantities(&[("n", "SELECT COUNT(*) FROM cells")]);
    let set = CriteriaSet { quantities: &q, strict: "n > 100", lenient: Some("n > 50"), catastrophic: Some("n < 1") };
    let r = decide(&set, &cells(), full_counts());
    assert_eq!((r.verdict, r.reason.as_str()), (Verdict::Fail, "no criterion holds"));
}

#[test]
fn missing_or_failed_cells_make_the_verdict_inconclusive_but_keep_the_numbers() {
    let q = quantities(&[("n", "SELECT COUNT(*) FROM cells")]);
    let set = CriteriaSet { quantities: &q, strict: "n = 6", lenient: None, catastrophic: None };
    let r = decide(&set, &cells(), CellCounts { planned: 8, ok: 6, failed: 0 });
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert_eq!(r.reason, "2 of 8 planned cells missing or failed");
    assert_eq!(r.quantities["n"].value, Some(Value::Int(6)));
    let r = decide(&set, &cells(), CellCounts { planned: 6, ok: 5, failed: 1 });
    assert_eq!(r.verdict, Verdict::Inconclusive);
}

#[test]
fn a_null_quantity_leaves_the_criterion_undecided() {
    let q = quantities(&[("m", "SELECT MEDIAN(ppl) FROM cells WHERE arm = 'lora-r4'")]);
    let set = CriteriaSet { quantities: &q, strict: "m < 3", lenient: None, catastrophic: None };
    let r = decide(&set, &cells(), full_counts());
    assert_eq!(r.quantities["m"].value, None);
    assert_eq!(r.criteria[0].holds, None);
    assert_eq!(r.verdict, Verdict::Inconclusive);
}

#[test]
fn failed_rows_are_invisible_to_quantities() {
    let all = cells();
    let mut rows = all.rows();
    for (row, status) in rows.iter_mut().zip(["ok", "ok", "failed", "ok", "ok", "ok"]) {
        row.insert("status".to_string(), Value::from(status));
    }
    let df = Table::from_rows(&all.columns(), &rows).unwrap();
    let q = quantities(&[("n", "SELECT COUNT(*) FROM cells")]);
    let set = CriteriaSet { quantities: &q, strict: "n = 5", lenient: None, catastrophic: None };
    let r = decide(&set, &df, CellCounts { planned: 6, ok: 5, failed: 1 });
    assert_eq!(r.quantities["n"].value, Some(Value::Int(5)));
}

#[test]
fn expressions_must_be_boolean_and_name_known_quantities() {
    let q = Table::from_rows(
        &[Column { name: "wins".into(), kind: ColumnType::Int }],
        &[Row::from([("wins".to_string(), Value::Int(3))])],
    )
    .unwrap();
    assert_eq!(evaluate_expression(&q, "wins >= 3 AND wins < 10").unwrap(), Some(true));
    assert!(evaluate_expression(&q, "wins + 1").unwrap_err().to_string().contains("not a boolean"));
    assert!(evaluate_expression(&q, "losses > 1").is_err());
}

#[test]
fn expectations_order_verdicts() {
    assert!(Verdict::Strict.meets(Verdict::Lenient));
    assert!(!Verdict::Lenient.meets(Verdict::Strict));
    assert!(Verdict::Fail.meets(Verdict::Fail));
    assert!(!Verdict::Catastrophic.meets(Verdict::Fail));
    assert!(!Verdict::Inconclusive.meets(Verdict::Fail));
    assert_eq!(Verdict::parse("STRICT"), Some(Verdict::Strict));
    assert_eq!(Verdict::parse("maybe"), None);
}
