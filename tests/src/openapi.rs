//! The repo's OpenAPI document (`secops-daemon/api/openapi.yaml`), read so tests can hold the
//! server to it: every route the server has is documented, and every answer a test gets
//! matches the documented schema for its status. A small validator for the subset of JSON
//! Schema the document uses: `$ref`, `type` (one or a list, `"null"` included), `enum`,
//! `required`, `properties`, `additionalProperties`, `items`.

use std::collections::BTreeSet;

use serde_json::Value;

pub struct OpenApi {
    doc: Value,
}

impl OpenApi {
    pub fn load() -> OpenApi {
        let path = crate::workspace_root().join("secops-daemon/api/openapi.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let doc: Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        OpenApi { doc }
    }

    /// Every documented (METHOD, path) pair.
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        if let Some(paths) = self.doc["paths"].as_object() {
            for (path, item) in paths {
                for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    fn resolve<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local $refs: {reference}"));
            node = self
                .doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"));
        }
        node
    }

    /// Panics unless `body` is what the document says `METHOD path` answers with `status`.
    /// A JSON body is checked against its schema; a text body only for being documented.
    pub fn check_response(&self, method: &str, path: &str, status: u16, body: &str) {
        let operation = &self.doc["paths"][path][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is not in openapi.yaml"
        );
        let response = self.resolve(&operation["responses"][status.to_string()]);
        assert!(
            response.is_object(),
            "{method} {path} answered {status}, which openapi.yaml does not document: {body}"
        );
        let content = &response["content"];
        if let Some(schema) = content.get("application/json").map(|c| &c["schema"]) {
            let value: Value = serde_json::from_str(body).unwrap_or_else(|e| {
                panic!("{method} {path} {status}: the body is not JSON ({e}): {body}")
            });
            if let Err(e) = self.validate(schema, &value, "body") {
                panic!("{method} {path} {status} does not match openapi.yaml: {e}\nbody: {body}");
            }
        }
    }

    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type in schema")),
            };
            let actual = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let ok =
                allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"));
            if !ok {
                return Err(format!("{at}: {actual}, expected {allowed:?}"));
            }
        }
        if value.is_null() {
            return Ok(());
        }
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            if !choices.contains(value) {
                return Err(format!("{at}: {value} is not one of {choices:?}"));
            }
        }
        if let Value::Object(map) = value {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !map.contains_key(name) {
                    return Err(format!("{at}: required field {name:?} is missing"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, v) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(s) => self.validate(s, v, &format!("{at}.{key}"))?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(format!("{at}: field {key:?} is not documented"))
                        }
                        Some(s @ Value::Object(_)) => {
                            self.validate(s, v, &format!("{at}.{key}"))?
                        }
                        // Undocumented fields in an answer are a drift between the two.
                        _ if properties.is_some() => {
                            return Err(format!("{at}: field {key:?} is not documented"))
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(s, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}
