//! A readable diff between two canonical specs, one line per changed key.

use std::collections::BTreeMap;

use serde_json::Value;

/// Lines like `changed procedure.steps: 100 -> 200` between the registered
/// (`old`) and the current (`new`) canonical spec.
pub fn diff_canonical(old: &Value, new: &Value) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", old, &mut a);
    flatten("", new, &mut b);
    let mut out = Vec::new();
    for (k, v) in &a {
        match b.get(k) {
            None => out.push(format!("removed {k} (was {v})")),
            Some(w) if w != v => out.push(format!("changed {k}: {v} -> {w}")),
            _ => {}
        }
    }
    for (k, w) in &b {
        if !a.contains_key(k) {
            out.push(format!("added {k} = {w}"));
        }
    }
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, x, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_changed_added_and_removed_keys() {
        let old = json!({"procedure": {"steps": 100, "lr": 5e-5}, "criteria": {"strict": "wins >= 12"}});
        let new = json!({"procedure": {"steps": 200, "seed": 1}, "criteria": {"strict": "wins >= 12"}});
        assert_eq!(
            diff_canonical(&old, &new),
            vec![
                "removed procedure.lr (was 0.00005)".to_string(),
                "changed procedure.steps: 100 -> 200".to_string(),
                "added procedure.seed = 1".to_string(),
            ]
        );
    }

    #[test]
    fn identical_specs_have_an_empty_diff() {
        let v = json!({"a": [1, 2], "b": {"c": "x"}});
        assert!(diff_canonical(&v, &v).is_empty());
    }
}
