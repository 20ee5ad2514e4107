//! The admin API's OpenAPI document: it parses as OpenAPI 3.1 with every
//! reference resolving, and it and the router agree: every operation it
//! lists is served, and a path it does not list is not.

use std::time::Duration;
use weft_tests::{Behavior, send_event, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_and_lists_exactly_what_the_router_serves() {
    let (receiver, _setup, host) = weft_tests::leads_host(Behavior::Accept).await;
    let (status, answer) = send_event(&host, "leads", &weft_tests::lead("a-1", 1)).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(60), || receiver.effect_count() == 1).await);

    let base = format!("http://{}", host.admin_addr);
    let client = weft_host::client::HostClient::new(&base, None);
    let doc = client
        .call(hyper::Method::GET, "/api/v1/openapi.json", None, &[])
        .await
        .unwrap();
    assert_eq!(doc.status, 200);
    let text = doc.body.to_string();
    let spec = oas3::from_json(&text).expect("parses as OpenAPI");
    let version = spec.validate_version().expect("a supported version");
    assert_eq!((version.major, version.minor), (3, 1));
    let ops: Vec<(String, oas3::spec::Operation)> = spec
        .operations()
        .map(|(path, method, op)| (format!("{method} {path}"), op.clone()))
        .collect();
    assert!(ops.len() >= 20, "{} operations", ops.len());
    for (what, op) in &ops {
        assert!(op.operation_id.is_some(), "{what} has an operation id");
        let responses = op.responses(&spec);
        for code in ["200", "401", "403"] {
            assert!(responses.contains_key(code), "{what} documents {code}");
        }
    }

    // Every listed operation is served (whatever it answers here, it is
    // not the router's "no such route").
    let mut typed = 0;
    for (path, method, _) in spec.operations() {
        let url = path
            .replace("{name}", "leads")
            .replace("{id}", if path.contains("events") { &id } else { "1" })
            .replace("{file}", "x");
        let body = (method != hyper::Method::GET).then(|| b"{}".to_vec());
        let reply = client.call(method.clone(), &url, body, &[]).await.unwrap();
        assert!(
            !reply.body.to_string().contains("no such API route"),
            "{method} {url} is listed but not served: {} {}",
            reply.status,
            reply.body
        );
        // A 200 answer is what the document says it is.
        if reply.status == 200 && path != "/api/v1/backups/{id}/{file}" {
            let schema = &doc.body["paths"][&path][method.as_str().to_ascii_lowercase()]["responses"]
                ["200"]["content"]["application/json"]["schema"];
            let root = serde_json::json!({
                "allOf": [schema],
                "components": doc.body["components"],
            });
            let validator = jsonschema::validator_for(&root).expect("a usable schema");
            let errors: Vec<String> = validator
                .iter_errors(&reply.body)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {url}: {errors:?}\n{}",
                reply.body
            );
            typed += usize::from(schema.get("$ref").is_some() || schema["properties"].is_object());
        }
    }
    assert!(typed >= 6, "{typed} answers checked against typed views");
    // The views are typed: a pipeline whose name is a number is not one.
    let root = serde_json::json!({
        "allOf": [doc.body["paths"]["/api/v1/pipelines"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]],
        "components": doc.body["components"],
    });
    let validator = jsonschema::validator_for(&root).unwrap();
    assert!(!validator.is_valid(&serde_json::json!({ "pipelines": [{ "name": 5 }] })));
    // And what is not listed is not served.
    for (method, path) in [
        (hyper::Method::GET, "/api/v1/nothing"),
        (hyper::Method::POST, "/api/v1/pipelines/leads/explode"),
        (hyper::Method::DELETE, "/api/v1/pipelines/leads"),
        (hyper::Method::GET, "/api/v1/reload"),
    ] {
        let body = (method != hyper::Method::GET).then(|| b"{}".to_vec());
        let reply = client.call(method.clone(), path, body, &[]).await.unwrap();
        assert_eq!(reply.status, 404, "{method} {path}");
        assert!(
            reply.body.to_string().contains("no such API route"),
            "{method} {path}: {}",
            reply.body
        );
        assert!(
            spec.operation(&method, path).is_none(),
            "{method} {path} is not listed"
        );
    }
    // Not on the webhook listener.
    let (status, _) =
        weft_tests::get_text(&format!("http://{}/api/v1/openapi.json", host.addr)).await;
    assert_eq!(status, 404);
    host.shutdown().await;
}
