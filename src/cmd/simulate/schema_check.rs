//! Unknown fields, found by walking a document against our own CRD schema: what `kubectl
//! apply`'s strict field validation would refuse, so a typo such as `retriez:` is not silently
//! ignored by serde.

use std::sync::OnceLock;

use serde_json::Value;

use otau_operator::api;

/// The OpenAPI schema of each of our kinds, as JSON, built once per process (building the
/// CRDs is far dearer than walking a document, and a file may hold thousands of documents).
fn schemas() -> &'static Vec<(String, Value)> {
    static SCHEMAS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        api::crds()
            .into_iter()
            .filter_map(|crd| {
                let schema = crd
                    .spec
                    .versions
                    .first()
                    .and_then(|v| v.schema.as_ref())
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| serde_json::to_value(s).ok())?;
                Some((crd.spec.names.kind, schema))
            })
            .collect()
    })
}

/// The fields of `document` that the schema of `kind` does not know, as (path, key), e.g.
/// `("spec.policy.retriez", "retriez")`, in document order.
pub fn unknown_fields(kind: &str, document: &serde_yaml::Value) -> Vec<(String, String)> {
    let Some((_, schema)) = schemas().iter().find(|(k, _)| k == kind) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(schema, document, "", &mut out);
    out
}

/// Fields of every Kubernetes object, which CRD schemas leave out.
const OBJECT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(schema: &Value, value: &serde_yaml::Value, path: &str, out: &mut Vec<(String, String)>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        serde_yaml::Value::Mapping(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                let Some(key) = k.as_str() else { continue };
                if path.is_empty() && OBJECT_FIELDS.contains(&key) {
                    continue;
                }
                let child = join(path, key);
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => walk(s, v, &child, out),
                    (None, None) if properties.is_some() => out.push((child, key.to_owned())),
                    (None, None) => {}
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(item_schema, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        serde_yaml::Value::Tagged(tagged) => walk(schema, &tagged.value, path, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_anywhere_in_the_spec_are_found_and_metadata_is_free() {
        let doc: serde_yaml::Value = serde_yaml::from_str(
            "apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata: {name: r, labels: {x: y}}\nspec:\n  packageRef: {name: p}\n  targets: {tags: [{name: a, value: b, colour: red}]}\n  waves: [{percent: 100}]\n  polcy: {}\n",
        )
        .unwrap();
        let found = unknown_fields("Rollout", &doc);
        assert_eq!(
            found,
            vec![
                (
                    "spec.targets.tags[0].colour".to_string(),
                    "colour".to_string()
                ),
                ("spec.polcy".to_string(), "polcy".to_string()),
            ]
        );
        assert!(unknown_fields("Secret", &doc).is_empty());
    }
}
