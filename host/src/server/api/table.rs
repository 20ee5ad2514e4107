//! The admin API's routes, as data: the router finds a request's route
//! here (and with it the role it needs), dispatches on its [`Op`] (a
//! `match` the compiler holds to every route), and the OpenAPI document is
//! written from the same table (see [`super::openapi`]), so neither can
//! drift from the other.

use crate::config::Role;
use hyper::Method;

/// A route's HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    /// As the OpenAPI document names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }

    fn is(self, m: &Method) -> bool {
        self.as_str().eq_ignore_ascii_case(m.as_str())
    }
}

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    OpenApi,
    WhoAmI,
    Plugins,
    AuditLog,
    AuditVerify,
    Reload,
    BackupTake,
    BackupFile,
    BackupRemove,
    Usage,
    Pipelines,
    Pipeline,
    Pause,
    Resume,
    PurgeQueued,
    CanaryPromote,
    CanaryRollback,
    DeadLetters,
    Replay,
    PurgeDeadLetters,
    Events,
    Event,
    Erase,
    Encryption,
    Reencrypt,
    Credentials,
    Compensate,
}

/// A query parameter a route reads.
pub struct Query {
    pub name: &'static str,
    pub about: &'static str,
}

/// One route of `/api/v1`.
pub struct Route {
    pub op: Op,
    pub method: Verb,
    /// Under `/api/v1`: `/pipelines/{name}/pause`; a last `{file*}` takes
    /// the rest of the path.
    pub path: &'static str,
    pub role: Role,
    pub summary: &'static str,
    pub query: &'static [Query],
    /// What the JSON body holds, for routes that read one: its
    /// description and its schema's name under `#/components/schemas`.
    pub body: Option<(&'static str, &'static str)>,
    /// What a `200` answer holds, in words.
    pub answer: &'static str,
}

/// The JSON type of an answer: one of the typed views, a list of them in a
/// field, or described in words only.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Free,
    One(Typed),
    List(&'static str, Typed),
}

/// The typed views the API answers with (the CLI reads the same types).
#[derive(Debug, Clone, Copy)]
pub enum Typed {
    PipelineStatus,
    Usage,
    DeadLetterView,
    ReplayOutcome,
    RunSummary,
    EventView,
    AuditRecord,
    CanaryView,
    BackupManifest,
    PluginView,
    Erasure,
    Encryption,
    Reencrypted,
    CredentialStatus,
}

const fn route(
    op: Op,
    method: Verb,
    path: &'static str,
    role: Role,
    summary: &'static str,
    answer: &'static str,
) -> Route {
    Route {
        op,
        method,
        path,
        role,
        summary,
        query: &[],
        body: None,
        answer,
    }
}

impl Route {
    /// The JSON type of its `200` answer.
    pub fn shape(&self) -> Shape {
        use Typed as V;
        match self.op {
            Op::Usage => Shape::One(V::Usage),
            Op::Pipelines => Shape::List("pipelines", V::PipelineStatus),
            Op::Pipeline | Op::Pause | Op::Resume => Shape::One(V::PipelineStatus),
            Op::CanaryPromote | Op::CanaryRollback => Shape::One(V::CanaryView),
            Op::DeadLetters => Shape::List("dead_letters", V::DeadLetterView),
            Op::Replay | Op::PurgeDeadLetters | Op::Compensate => {
                Shape::List("results", V::ReplayOutcome)
            }
            Op::Events => Shape::List("events", V::RunSummary),
            Op::Event => Shape::One(V::EventView),
            Op::AuditLog => Shape::List("records", V::AuditRecord),
            Op::Plugins => Shape::List("plugins", V::PluginView),
            Op::OpenApi
            | Op::WhoAmI
            | Op::AuditVerify
            | Op::Reload
            | Op::BackupTake
            | Op::BackupFile
            | Op::BackupRemove
            | Op::PurgeQueued => Shape::Free,
            Op::Erase => Shape::One(V::Erasure),
            Op::Encryption => Shape::One(V::Encryption),
            Op::Reencrypt => Shape::One(V::Reencrypted),
            Op::Credentials => Shape::List("credentials", V::CredentialStatus),
        }
    }
}

const SINCE: Query = Query {
    name: "since",
    about: "RFC 3339 time, or an age such as `2h`",
};
const PIPELINE: Query = Query {
    name: "pipeline",
    about: "only this pipeline",
};
const SELECTION: &str = r#"{"ids": ["…"]} or {"all": true, "pipeline": "…", "since": "2h"}"#;

/// Every route of `/api/v1`.
pub const ROUTES: &[Route] = &[
    route(
        Op::OpenApi,
        Verb::Get,
        "/openapi.json",
        Role::Viewer,
        "This document: every route of the admin API (OpenAPI 3.1)",
        "the OpenAPI document",
    ),
    route(
        Op::WhoAmI,
        Verb::Get,
        "/whoami",
        Role::Viewer,
        "The caller: its token's name and role (`anonymous`, admin, without tokens)",
        "{name, role}",
    ),
    route(
        Op::Plugins,
        Verb::Get,
        "/plugins",
        Role::Viewer,
        "Loaded plugins, each version apart",
        "{plugins: [{name, version, used_by, sha256, world, imports, grant, mismatches, calls, failures, denials}]}",
    ),
    Route {
        query: &[Query {
            name: "from",
            about: "the first record's index",
        }],
        ..route(
            Op::AuditLog,
            Verb::Get,
            "/audit-log",
            Role::Viewer,
            "The audit log's records",
            "{records: [{index, at_ms, kind, actor, pipeline, action, detail, hash}]}",
        )
    },
    route(
        Op::AuditVerify,
        Verb::Get,
        "/audit-log/verify",
        Role::Viewer,
        "Check the audit log's keyed hash chain",
        "{intact, records} or {intact: false, index, reason}",
    ),
    Route {
        body: Some((
            r#"{"subject": "email", "value": "ann@example.com", "emit": "erasures"} (emit: a pipeline to send the erasure request into, optional)"#,
            "EraseRequest",
        )),
        ..route(
            Op::Erase,
            Verb::Post,
            "/erase",
            Role::Admin,
            "Erase a data subject from the run history and the dead-letter queue (pipelines' `subjects`); audited without the value",
            "Erasure",
        )
    },
    route(
        Op::Credentials,
        Verb::Get,
        "/credentials",
        Role::Viewer,
        "Every credential the grants attach: static secrets, and OAuth clients with their tokens' state (valid until, last refresh, last error); never a secret or a token",
        "{credentials: [CredentialStatus]}",
    ),
    route(
        Op::Encryption,
        Verb::Get,
        "/store/encryption",
        Role::Viewer,
        "The store's encryption at rest: the current key's id and the ids of the keys values are sealed under",
        "Encryption",
    ),
    route(
        Op::Reencrypt,
        Verb::Post,
        "/store/reencrypt",
        Role::Admin,
        "Seal every value not under the current key again under it, while the host serves; audited",
        "Reencrypted",
    ),
    route(
        Op::Reload,
        Verb::Post,
        "/reload",
        Role::Admin,
        "Read weft.toml and the plugin directory again and switch to them; 422 and nothing changed when any check fails",
        "{pipelines: {added, changed, removed, unchanged}, plugins: {added, changed, removed}, recovered, kept, attempts_unfinished, took_ms}",
    ),
    route(
        Op::BackupTake,
        Verb::Post,
        "/backups",
        Role::Admin,
        "Take a consistent backup of the store, staged for download",
        "{id, manifest}",
    ),
    Route {
        query: &[Query {
            name: "offset",
            about: "byte offset of the chunk (8 MiB each)",
        }],
        ..route(
            Op::BackupFile,
            Verb::Get,
            "/backups/{id}/{file*}",
            Role::Admin,
            "One chunk of a staged backup's file",
            "the bytes",
        )
    },
    route(
        Op::BackupRemove,
        Verb::Delete,
        "/backups/{id}",
        Role::Admin,
        "Remove a staged backup",
        "{removed}",
    ),
    route(
        Op::Usage,
        Verb::Get,
        "/usage",
        Role::Viewer,
        "Bytes in memory (now, peak, limit) and in the store by kind",
        "Usage",
    ),
    route(
        Op::Pipelines,
        Verb::Get,
        "/pipelines",
        Role::Viewer,
        "Every pipeline's state and counters",
        "{pipelines: [PipelineStatus]}",
    ),
    route(
        Op::Pipeline,
        Verb::Get,
        "/pipelines/{name}",
        Role::Viewer,
        "One pipeline's state and counters",
        "PipelineStatus",
    ),
    route(
        Op::Pause,
        Verb::Post,
        "/pipelines/{name}/pause",
        Role::Operator,
        "Pause delivery (accepting goes on); survives a restart",
        "PipelineStatus",
    ),
    route(
        Op::Resume,
        Verb::Post,
        "/pipelines/{name}/resume",
        Role::Operator,
        "Resume delivery",
        "PipelineStatus",
    ),
    route(
        Op::PurgeQueued,
        Verb::Post,
        "/pipelines/{name}/purge",
        Role::Admin,
        "Delete the queued events of a pipeline no longer configured",
        "{purged}",
    ),
    Route {
        query: &[Query {
            name: "step",
            about: "which canary: a step number or `sink` (needed when there are several)",
        }],
        ..route(
            Op::CanaryPromote,
            Verb::Post,
            "/pipelines/{name}/canary/promote",
            Role::Operator,
            "Send every event of the canary's step to the candidate",
            "CanaryView",
        )
    },
    Route {
        query: &[Query {
            name: "step",
            about: "which canary: a step number or `sink` (needed when there are several)",
        }],
        ..route(
            Op::CanaryRollback,
            Verb::Post,
            "/pipelines/{name}/canary/rollback",
            Role::Operator,
            "Send every event of the canary's step to the baseline",
            "CanaryView",
        )
    },
    Route {
        query: &[PIPELINE, SINCE],
        ..route(
            Op::DeadLetters,
            Verb::Get,
            "/dlq",
            Role::Viewer,
            "Dead letters with their attempt history",
            "{dead_letters: [DeadLetterView]}",
        )
    },
    Route {
        body: Some((SELECTION, "Selection")),
        ..route(
            Op::Replay,
            Verb::Post,
            "/dlq/replay",
            Role::Operator,
            "Put dead letters back in their pipeline's queue",
            "{results: [{id, result}]}",
        )
    },
    Route {
        body: Some((SELECTION, "Selection")),
        ..route(
            Op::PurgeDeadLetters,
            Verb::Post,
            "/dlq/purge",
            Role::Admin,
            "Delete dead letters for good",
            "{results: [{id, result}]}",
        )
    },
    Route {
        body: Some((SELECTION, "Selection")),
        ..route(
            Op::Compensate,
            Verb::Post,
            "/dlq/compensate",
            Role::Operator,
            "Queue the compensation of dead letters of pipelines with `compensate` (once per event key)",
            "{results: [{id, result}]}",
        )
    },
    Route {
        query: &[
            PIPELINE,
            Query {
                name: "state",
                about: "queued, delivered, filtered, split or dead-lettered",
            },
            SINCE,
            Query {
                name: "limit",
                about: "at most this many (default 50, at most 10000)",
            },
        ],
        ..route(
            Op::Events,
            Verb::Get,
            "/events",
            Role::Viewer,
            "The run history, newest first",
            "{events: [RunSummary]}",
        )
    },
    route(
        Op::Event,
        Verb::Get,
        "/events/{id}",
        Role::Viewer,
        "One event: state, every attempt and plugin call, payload (redacted fields masked)",
        "EventView",
    ),
];

/// The route `method` and `segments` (the path under `/api/v1`, split)
/// ask for, with the values of its `{…}` parameters in order.
pub fn find(method: &Method, segments: &[&str]) -> Option<(&'static Route, Vec<String>)> {
    'routes: for r in ROUTES.iter().filter(|r| r.method.is(method)) {
        let parts: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        let mut params = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if part.ends_with("*}") {
                if segments.len() <= i {
                    continue 'routes;
                }
                params.push(segments[i..].join("/"));
                return Some((r, params));
            }
            let Some(seg) = segments.get(i) else {
                continue 'routes;
            };
            if part.starts_with('{') {
                params.push(seg.to_string());
            } else if part != seg {
                continue 'routes;
            }
        }
        if segments.len() == parts.len() {
            return Some((r, params));
        }
    }
    None
}

/// The role a request needs: its route's, or (for a path no route takes,
/// answered 404 once the caller is known) viewer to read, operator else.
pub fn role_of(method: &Method, segments: &[&str]) -> Role {
    match find(method, segments) {
        Some((r, _)) => r.role,
        None if method == Method::GET => Role::Viewer,
        None => Role::Operator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_find_their_route_and_its_parameters() {
        let (r, p) = find(&Method::POST, &["pipelines", "leads", "pause"]).unwrap();
        assert_eq!((r.op, p), (Op::Pause, vec!["leads".to_string()]));
        let (r, p) = find(&Method::GET, &["backups", "17", "payloads", "x"]).unwrap();
        assert_eq!(
            (r.op, p),
            (Op::BackupFile, vec!["17".into(), "payloads/x".into()])
        );
        assert!(find(&Method::GET, &["backups", "17"]).is_none());
        assert!(find(&Method::GET, &["pipelines", "leads", "pause"]).is_none());
        assert!(find(&Method::POST, &["nothing"]).is_none());
        assert_eq!(role_of(&Method::POST, &["reload"]), Role::Admin);
        assert_eq!(role_of(&Method::POST, &["nothing"]), Role::Operator);
    }
}
