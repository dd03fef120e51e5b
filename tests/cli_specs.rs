//! Spec validation through the CLI: the catalogue checks clean, and each
//! invalid fixture gives exit 2 with an error naming the file and the key.

mod common;

use common::{TestRepo, code, stderr};

fn check(fixture: &str) -> (i32, String) {
    let repo = TestRepo::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid").join(fixture);
    let out = repo.run(&["check", path.to_str().unwrap()]);
    (code(&out), stderr(&out))
}

fn assert_names(fixture: &str, needles: &[&str]) {
    let (code, err) = check(fixture);
    assert_eq!(code, 2, "{fixture}: {err}");
    assert!(err.contains(fixture), "{fixture}: the error names the file: {err}");
    for n in needles {
        assert!(err.contains(n), "{fixture}: expected `{n}` in:\n{err}");
    }
}

#[test]
fn the_catalogue_checks_clean() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bets"))
        .args(["--repo", env!("CARGO_MANIFEST_DIR"), "check"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn malformed_toml_names_the_line() {
    assert_names("91_malformed.toml", &["malformed TOML", "line 8, column 11: [procedure"]);
}

#[test]
fn an_unknown_key_is_named_with_the_keys_that_exist() {
    assert_names("92_unknown_key.toml", &["hypotesis: unknown key", "top-level keys are"]);
}

#[test]
fn a_wrong_type_names_the_key() {
    assert_names("93_wrong_type.toml", &["depends_on", "invalid type"]);
}

#[test]
fn an_unknown_experiment_kind_lists_the_known_ones() {
    assert_names(
        "94_unknown_experiment.toml",
        &["procedure.experiment", "royalty-maths", "known kinds:", "royalty-math"],
    );
}

#[test]
fn a_quantity_on_an_unknown_metric_fails_at_check() {
    assert_names("95_unknown_metric.toml", &["quantities.violations", "conservation_violation", "has columns"]);
}

#[test]
fn a_reference_line_must_be_drawable_on_its_plot() {
    assert_names(
        "89_bad_reference.toml",
        &[
            "plots[0].reference",
            "0 cannot be drawn on this axis",
            "plots[1].reference",
            "belongs to a `points` plot",
            "plots[2].reference_label",
            "a label needs `reference`",
        ],
    );
}

#[test]
fn a_criterion_on_an_unknown_quantity_fails_at_check() {
    assert_names("96_unknown_quantity.toml", &["criteria.strict", "criteria name quantities: violations"]);
}

#[test]
fn a_factor_the_experiment_does_not_have_is_named() {
    assert_names("97_unknown_factor.toml", &["grid.user", "has no factor `user`", "its factors:"]);
}

#[test]
fn an_unknown_procedure_parameter_is_named() {
    assert_names("98_unknown_param.toml", &["procedure", "requestz"]);
}

#[test]
fn a_personalisation_claim_needs_a_control() {
    assert_names("99_personalisation_without_control.toml", &["controls", "negative control"]);
}

#[test]
fn check_lists_problems_of_every_file_at_once() {
    let repo = TestRepo::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let a = dir.join("94_unknown_experiment.toml");
    let b = dir.join("97_unknown_factor.toml");
    let out = repo.run(&["check", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("94_unknown_experiment.toml") && stderr(&out).contains("97_unknown_factor.toml"));
}

#[test]
fn the_schema_describes_every_top_level_key() {
    let repo = TestRepo::new();
    let out = repo.run(&["schema"]);
    assert_eq!(code(&out), 0);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let props = schema["properties"].as_object().unwrap();
    for k in ["number", "hypothesis", "procedure", "grid", "criteria", "quantities", "controls", "profiles"] {
        assert!(props.contains_key(k), "schema lacks {k}");
    }
}

/// bets/README.md documents exactly the keys the spec structs accept.
#[test]
fn the_spec_reference_documents_exactly_the_schema_keys() {
    let repo = TestRepo::new();
    let out = repo.run(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    let mut collect = |v: &serde_json::Value| {
        if let Some(p) = v["properties"].as_object() {
            for k in p.keys() {
                // `params` is the flattened rest of [procedure], not a key.
                if k != "params" {
                    keys.insert(k.clone());
                }
            }
        }
    };
    collect(&schema);
    for def in schema["$defs"].as_object().unwrap().values() {
        collect(def);
    }
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bets/README.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .collect();
    assert_eq!(keys, documented, "bets/README.md's spec reference and the spec structs disagree");
}

/// A foreign validator (Python's `jsonschema`, draft 2020-12) accepts every
/// catalogue spec against `bets schema` and refuses an unknown procedure
/// parameter, at the top level and in a profile's overrides, as `bets check` does.
const JSONSCHEMA_SCRIPT: &str = r#"
import glob, json, sys, tomllib
import jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
good = sorted(glob.glob(sys.argv[2] + "/[0-9]*.toml"))
bad = [f for f in good if list(validator.iter_errors(tomllib.load(open(f, "rb"))))]
spec = tomllib.load(open(good[0], "rb"))
spec["procedure"]["stepz"] = 3
over = tomllib.load(open(good[0], "rb"))
over.setdefault("profiles", {}).setdefault("tiny", {}).setdefault("procedure", {})["stepz"] = 3
print(json.dumps({"checked": len(good), "refused_good": bad, "stepz_refused": not validator.is_valid(spec),
                  "profile_stepz_refused": not validator.is_valid(over)}))
"#;

#[test]
fn a_foreign_json_schema_validator_agrees_with_bets_check() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = std::process::Command::new(&python).args(["-c", "import jsonschema, tomllib"]).output();
    // CI installs jsonschema (.ci/run), so there the foreign validator always runs.
    let in_ci = std::env::var_os("CI").is_some();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(!in_ci, "{python} lacks jsonschema or tomllib; .ci/run installs jsonschema==4.26.0");
        eprintln!("skipped: {python} lacks jsonschema (pip install jsonschema==4.26.0) or tomllib (Python 3.11+)");
        return;
    }
    let repo = TestRepo::new();
    let out = repo.run(&["schema"]);
    assert_eq!(code(&out), 0);
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, &out.stdout).unwrap();
    let bets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bets");
    let run =
        std::process::Command::new(&python).args(["-c", JSONSCHEMA_SCRIPT]).arg(&schema).arg(&bets).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let result: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(result["checked"].as_u64().unwrap() >= 10, "{result}");
    assert_eq!(result["refused_good"], serde_json::json!([]), "{result}");
    assert_eq!(result["stepz_refused"], true, "{result}");
    assert_eq!(result["profile_stepz_refused"], true, "{result}");
}
