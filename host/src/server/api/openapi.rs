//! The OpenAPI 3.1 document of the admin API, written from the route
//! table: paths, roles, parameters, and the answers' JSON types from the
//! API's own view types.

use super::table::{ROUTES, Shape, Typed, Verb};

/// The schemas of the typed views (under `#/components/schemas`) and a
/// reference to each.
fn views() -> (
    serde_json::Map<String, serde_json::Value>,
    impl Fn(Typed) -> serde_json::Value,
) {
    use schemars::generate::{Contract, SchemaSettings};
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    settings.contract = Contract::Serialize;
    let mut g = settings.into_generator();
    let mut refs = std::collections::HashMap::new();
    macro_rules! view {
        ($v:ident, $t:ty) => {
            refs.insert(
                format!("{:?}", Typed::$v),
                g.subschema_for::<$t>().to_value(),
            );
        };
    }
    view!(PipelineStatus, crate::engine::PipelineStatus);
    view!(Usage, crate::engine::Usage);
    view!(DeadLetterView, crate::engine::DeadLetterView);
    view!(ReplayOutcome, crate::engine::ReplayOutcome);
    view!(RunSummary, crate::engine::RunSummary);
    view!(EventView, crate::engine::EventView);
    view!(AuditRecord, crate::store::AuditRecord);
    view!(CanaryView, crate::engine::CanaryView);
    view!(BackupManifest, crate::store::BackupManifest);
    view!(PluginView, super::PluginView);
    view!(Erasure, crate::engine::Erasure);
    view!(Encryption, crate::store::Encryption);
    view!(Reencrypted, crate::store::Reencrypted);
    view!(CredentialStatus, crate::sandbox::oauth::CredentialStatus);
    // The request bodies: of replay and purge, and of an erasure.
    g.subschema_for::<crate::engine::Selection>();
    g.subschema_for::<crate::engine::EraseRequest>();
    let defs = g.take_definitions(true);
    (defs, move |v: Typed| refs[&format!("{v:?}")].clone())
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn document() -> serde_json::Value {
    use serde_json::json;
    let (schemas, view) = views();
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let path = format!("/api/v1{}", r.path.replace("*}", "}"));
        let mut parameters: Vec<serde_json::Value> = r
            .path
            .split('/')
            .filter_map(|p| p.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|p| {
                let name = p.trim_end_matches('*');
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "schema": { "type": "string" },
                    "description": if p.ends_with('*') { "may hold `/`" } else { "" },
                })
            })
            .collect();
        parameters.extend(r.query.iter().map(|q| {
            json!({ "name": q.name, "in": "query", "required": false, "schema": { "type": "string" }, "description": q.about })
        }));
        let mut op = json!({
            "operationId": format!("{:?}", r.op),
            "summary": r.summary,
            "description": format!("Needs the {} role.", r.role.as_str()),
            "parameters": parameters,
            "responses": {
                "200": {
                    "description": r.answer,
                    "content": { "application/json": { "schema": match r.shape() {
                        Shape::Free => json!({ "type": "object" }),
                        Shape::One(v) => view(v),
                        Shape::List(field, v) => json!({
                            "type": "object",
                            "properties": { field: { "type": "array", "items": view(v) } },
                            "required": [field],
                        }),
                    } } }
                },
                "401": { "$ref": "#/components/responses/Unauthorized" },
                "403": { "$ref": "#/components/responses/Forbidden" },
            },
        });
        if r.method != Verb::Get {
            op["requestBody"] = json!({
                "required": r.body.is_some(),
                "description": r.body.map_or("{} (a mutating call must be application/json)", |b| b.0),
                "content": { "application/json": { "schema": match r.body {
                    Some((_, schema)) => json!({ "$ref": format!("#/components/schemas/{schema}") }),
                    None => json!({ "type": "object" }),
                } } }
            });
        }
        let entry = paths
            .entry(path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("an object");
        entry.insert(r.method.as_str().to_string(), op);
    }
    let error = json!({
        "type": "object",
        "properties": { "error": { "type": "string" } },
        "required": ["error"]
    });
    let mut schemas = schemas;
    schemas.insert("Error".into(), error);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "weft admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Served on the admin listener (server.admin_listen). With [[admin.tokens]] configured, every call needs Authorization: Bearer <token> of a role at least the one each route names; a mutating call must be application/json and not cross-site."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
            "responses": {
                "Unauthorized": {
                    "description": "missing or wrong bearer token",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                },
                "Forbidden": {
                    "description": "the token's role is too low, or a cross-site call",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        },
        "security": [ { "bearer": [] } ],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_route_once() {
        let doc = document();
        let mut seen = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            seen += ops.as_object().unwrap().len();
            assert!(path.starts_with("/api/v1/"), "{path}");
        }
        assert_eq!(seen, ROUTES.len());
        let ids: std::collections::HashSet<String> =
            ROUTES.iter().map(|r| format!("{:?}", r.op)).collect();
        assert_eq!(ids.len(), ROUTES.len(), "one route per operation");
    }
}
