//! The JSON Schema of a spec file, with each experiment kind's parameters:
//! `[procedure]` is one of the kinds' parameter schemas, chosen by its
//! `experiment` key, so an external validator refuses `procedure.stepz`
//! just as `bets check` does.

use serde_json::{Value, json};

use super::SpecFile;

/// The schema `bets schema` prints.
pub fn json_schema() -> Value {
    let mut root = schemars::schema_for!(SpecFile).to_value();
    // A profile's `procedure` overrides some of its kind's parameters: for
    // each kind, when `procedure.experiment` names it, every profile's
    // overrides may only use that kind's parameter names.
    let overrides: Vec<Value> = crate::kinds::all()
        .into_iter()
        .map(|e| {
            let params = e.params_schema().to_value();
            let props = params.get("properties").cloned().unwrap_or_else(|| json!({}));
            json!({
                "if": { "properties": { "procedure": { "properties": { "experiment": { "const": e.kind() } } } } },
                "then": { "properties": { "profiles": { "additionalProperties": {
                    "properties": { "procedure": { "properties": props, "additionalProperties": false } }
                } } } }
            })
        })
        .collect();
    root["allOf"] = json!(overrides);
    let kinds: Vec<Value> = crate::kinds::all()
        .into_iter()
        .map(|e| {
            let mut s = e.params_schema().to_value();
            if let Some(obj) = s.as_object_mut() {
                obj.remove("$schema");
                let props = obj.entry("properties").or_insert_with(|| json!({}));
                props["experiment"] = json!({ "const": e.kind(), "description": e.summary() });
                let required = obj.entry("required").or_insert_with(|| json!([]));
                if let Some(r) = required.as_array_mut() {
                    r.push(json!("experiment"));
                }
            }
            s
        })
        .collect();
    // The kind's own keys come from its schema; `experiment` picks the kind.
    root["$defs"]["Procedure"] = json!({
        "description": "The experiment kind and its parameters; see `bets list --experiments`.",
        "type": "object",
        "properties": {
            "experiment": { "type": "string", "description": "An experiment kind from `bets list --experiments`." }
        },
        "required": ["experiment"],
        "oneOf": kinds,
    });
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procedure_is_one_of_the_kinds_each_closed_to_unknown_keys() {
        let schema = json_schema();
        assert_eq!(schema["properties"]["procedure"]["$ref"], "#/$defs/Procedure");
        let kinds = schema["$defs"]["Procedure"]["oneOf"].as_array().unwrap();
        assert_eq!(kinds.len(), crate::kinds::all().len());
        let gossip = kinds.iter().find(|k| k["properties"]["experiment"]["const"] == "gossip-directory").unwrap();
        assert_eq!(gossip["additionalProperties"], json!(false));
        assert!(gossip["properties"]["fanout"].is_object());
        assert!(gossip["required"].as_array().unwrap().contains(&json!("experiment")));
        let overrides = schema["allOf"].as_array().unwrap();
        assert_eq!(overrides.len(), kinds.len());
        let then = &overrides[0]["then"]["properties"]["profiles"]["additionalProperties"]["properties"]["procedure"];
        assert_eq!(then["additionalProperties"], json!(false));
    }
}
