//! Immutability that a `field: null` line does not break.
//!
//! Every `Option` field of the CRDs is `nullable`, so that server-side apply (Flux, Helm 4,
//! `kubectl apply --server-side`) accepts `field: null`, which Helm renders for an unset value;
//! the apiserver then stores the null. CEL's `has()` treats a null field as absent, but `==` on
//! two objects does not (the apiserver compares their sizes, nulls included), so a plain
//! `self == oldSelf` refused adding or removing a `field: null` line in an immutable spec. The
//! rule built here compares field by field, from the schema: a field set to null counts as
//! absent, and an absent list as an empty one.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray,
};

/// CEL: `a` equals `b` as values of `schema`, nulls counting as absent.
pub fn same(schema: &JSONSchemaProps, a: &str, b: &str) -> String {
    match schema.type_.as_deref() {
        Some("object") if schema.properties.is_some() => {
            let parts: Vec<String> = schema
                .properties
                .iter()
                .flatten()
                .map(|(name, property)| {
                    let (x, y) = (format!("{a}.{name}"), format!("{b}.{name}"));
                    if property.type_.as_deref() == Some("array") {
                        let size = |z: &str| format!("(has({z}) ? size({z}) : 0)");
                        format!(
                            "({} == {} && (!has({x}) || !has({y}) || {}))",
                            size(&x),
                            size(&y),
                            same(property, &x, &y)
                        )
                    } else {
                        format!(
                            "(has({x}) == has({y}) && (!has({x}) || {}))",
                            same(property, &x, &y)
                        )
                    }
                })
                .collect();
            if parts.is_empty() {
                "true".to_owned()
            } else {
                parts.join(" && ")
            }
        }
        Some("array") => match schema.items.as_ref() {
            Some(JSONSchemaPropsOrArray::Schema(items))
                if items.type_.as_deref() == Some("object") =>
            {
                let max = schema
                    .max_items
                    .expect("a list of objects compared field by field needs maxItems");
                let indices: Vec<String> = (0..max).map(|i| i.to_string()).collect();
                format!(
                    "size({a}) == size({b}) && [{}].all(i, i >= size({a}) || ({}))",
                    indices.join(", "),
                    same(items, &format!("{a}[i]"), &format!("{b}[i]"))
                )
            }
            _ => format!("{a} == {b}"),
        },
        _ => format!("{a} == {b}"),
    }
}

/// The rule that makes a whole object of `schema` immutable (transition rule: `self` is the new
/// value, `oldSelf` the stored one).
pub fn rule(schema: &JSONSchemaProps) -> String {
    same(schema, "self", "oldSelf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn string() -> JSONSchemaProps {
        JSONSchemaProps {
            type_: Some("string".into()),
            ..JSONSchemaProps::default()
        }
    }

    fn object(properties: &[(&str, JSONSchemaProps)]) -> JSONSchemaProps {
        JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some(
                properties
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..JSONSchemaProps::default()
        }
    }

    #[test]
    fn objects_compare_field_by_field_and_lists_by_size_then_items() {
        let file = object(&[("name", string()), ("url", string())]);
        let files = JSONSchemaProps {
            type_: Some("array".into()),
            max_items: Some(2),
            items: Some(JSONSchemaPropsOrArray::Schema(Box::new(file))),
            ..JSONSchemaProps::default()
        };
        let spec = object(&[("files", files), ("version", string())]);
        assert_eq!(
            rule(&spec),
            "((has(self.files) ? size(self.files) : 0) == (has(oldSelf.files) ? size(oldSelf.files) : 0) \
             && (!has(self.files) || !has(oldSelf.files) || size(self.files) == size(oldSelf.files) \
             && [0, 1].all(i, i >= size(self.files) || ((has(self.files[i].name) == has(oldSelf.files[i].name) \
             && (!has(self.files[i].name) || self.files[i].name == oldSelf.files[i].name)) \
             && (has(self.files[i].url) == has(oldSelf.files[i].url) \
             && (!has(self.files[i].url) || self.files[i].url == oldSelf.files[i].url)))))) \
             && (has(self.version) == has(oldSelf.version) && (!has(self.version) || self.version == oldSelf.version))"
        );
    }
}
