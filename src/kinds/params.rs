//! Procedure parameters: parsed once from the spec's `[procedure]` table
//! into the kind's typed `Params`, range-checked, and kept in canonical form
//! (every default filled in) for cell keys and manifests.

use std::any::Any;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One thing wrong with the parameters: the key (relative to `[procedure]`,
/// e.g. `steps` or `users[2]`; empty for the table) and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ParamProblem {
    pub key: String,
    pub message: String,
}

impl ParamProblem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ParamProblem {
        ParamProblem { key: key.into(), message: message.into() }
    }

    /// The first of `counts` (key, value) that is 0, as a problem.
    pub fn all_positive(counts: &[(&str, usize)]) -> Result<(), ParamProblem> {
        match counts.iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err(ParamProblem::new(*key, "must be positive")),
            None => Ok(()),
        }
    }
}

impl From<crate::sim::InvalidParam> for ParamProblem {
    fn from(e: crate::sim::InvalidParam) -> Self {
        ParamProblem::new(e.param, e.problem)
    }
}

/// Deserialize a `[procedure]` table (without `experiment`) into `T`; an
/// error names the key path where it went wrong.
///
/// A key that `T` does not have is refused even when serde would let it
/// pass: a `#[serde(flatten)]`-ed struct (the shared `Budget`) only ever
/// sees its own fields, so its `deny_unknown_fields` cannot catch a typo.
/// Every key of `raw` must therefore appear in `T`'s serialised form.
pub fn parse_params<T: DeserializeOwned + Serialize>(raw: &toml::Table) -> Result<T, ParamProblem> {
    let value = toml::Value::Table(raw.clone());
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let message = message.lines().next().unwrap_or_default().trim().to_string();
        let key = if path == "." { String::new() } else { path };
        ParamProblem { key, message }
    })?;
    if let Ok(serde_json::Value::Object(known)) = serde_json::to_value(&typed)
        && let Some(unknown) = raw.keys().find(|k| !known.contains_key(k.as_str()))
    {
        let expected: Vec<String> = known.keys().map(|k| format!("`{k}`")).collect();
        return Err(ParamProblem::new(
            unknown.as_str(),
            format!("unknown field `{unknown}`, expected one of {}", expected.join(", ")),
        ));
    }
    Ok(typed)
}

/// A kind's parameters after parsing: the typed value its cells use, and
/// the canonical JSON (defaults filled in) that cell keys and manifests hash,
/// so `steps = 100` written out and left at its default are the same run.
#[derive(Clone)]
pub struct Parameters {
    canonical: serde_json::Value,
    typed: Arc<dyn Any + Send + Sync>,
}

impl Parameters {
    /// Wrap a typed value.
    pub fn new<P: Serialize + Send + Sync + 'static>(typed: P) -> Parameters {
        let canonical = serde_json::to_value(&typed).expect("parameters serialise to JSON");
        Parameters { canonical, typed: Arc::new(typed) }
    }

    /// The canonical form: what the cell key and the manifest record.
    pub fn canonical(&self) -> &serde_json::Value {
        &self.canonical
    }

    /// The typed value, if it is a `P`.
    pub fn get<P: 'static>(&self) -> Option<&P> {
        self.typed.downcast_ref()
    }
}

impl std::fmt::Debug for Parameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Parameters({})", self.canonical)
    }
}

impl PartialEq for Parameters {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_zero_count_is_named() {
        assert!(ParamProblem::all_positive(&[("a", 1), ("b", 2)]).is_ok());
        let e = ParamProblem::all_positive(&[("a", 1), ("b", 0), ("c", 0)]).unwrap_err();
        assert_eq!((e.key.as_str(), e.message.as_str()), ("b", "must be positive"));
    }

    #[derive(Debug, serde::Deserialize, Serialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct P {
        steps: usize,
        users: Vec<String>,
    }

    impl Default for P {
        fn default() -> Self {
            P { steps: 100, users: vec![] }
        }
    }

    fn parse(src: &str) -> Result<P, ParamProblem> {
        parse_params(&src.parse().unwrap())
    }

    #[test]
    fn errors_name_the_key_they_are_about() {
        let e = parse("stepz = 3").unwrap_err();
        assert_eq!(e.key, "stepz");
        assert!(e.message.starts_with("unknown field `stepz`"), "{e}");
        let e = parse("steps = 2.5").unwrap_err();
        assert_eq!(e.key, "steps");
        let e = parse("users = [\"a\", 3]").unwrap_err();
        assert_eq!(e.key, "users[1]");
        assert_eq!(e.to_string(), format!("users[1]: {}", e.message));
    }

    #[derive(Debug, serde::Deserialize, Serialize, Default)]
    struct Flat {
        users: Vec<String>,
        #[serde(flatten)]
        inner: P,
    }

    #[test]
    fn a_typo_is_refused_beside_a_flattened_struct_too() {
        let ok: Flat = parse_params(&"users = [\"a\"]\nsteps = 3".parse().unwrap()).unwrap();
        assert_eq!((ok.users.len(), ok.inner.steps), (1, 3));
        let e = parse_params::<Flat>(&"users = []\nstepz = 3".parse().unwrap()).unwrap_err();
        assert_eq!(e.key, "stepz");
        assert!(e.message.starts_with("unknown field `stepz`, expected one of "), "{e}");
        assert!(e.message.contains("`steps`") && e.message.contains("`users`"), "{e}");
    }

    #[test]
    fn written_out_defaults_and_omitted_ones_are_the_same_parameters() {
        let a = Parameters::new(parse("").unwrap());
        let b = Parameters::new(parse("steps = 100").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.canonical(), &serde_json::json!({"steps": 100, "users": []}));
        assert_ne!(a, Parameters::new(parse("steps = 101").unwrap()));
        assert_eq!(a.get::<P>().map(|p| p.steps), Some(100));
        assert!(a.get::<String>().is_none());
    }
}
