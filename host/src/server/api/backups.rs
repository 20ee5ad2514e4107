//! Backups of a running host, for the admin role: `POST /api/v1/backups`
//! takes a snapshot of the store (writes pause while it is taken) into a
//! staging directory beside it and answers its id and manifest;
//! `GET /api/v1/backups/{id}/{file}?offset=N` hands its files out in
//! chunks of [`CHUNK`] bytes; `DELETE /api/v1/backups/{id}` removes it.
//! `weft backup DIR` makes the three calls. One backup is staged at a
//! time: taking one removes the one before.

use super::ApiState;
use crate::engine::Engine;
use crate::reply::{Body, error, json};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// Most bytes of a file in one answer.
pub const CHUNK: usize = 8 * 1024 * 1024;

fn staged(state: &ApiState, id: &str) -> Option<PathBuf> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| state.backups.join(id))
}

/// Take a backup into the staging directory.
pub(super) async fn take(engine: &Engine, state: &ApiState) -> Response<Body> {
    let store = engine.store().clone();
    let root = state.backups.clone();
    let started = std::time::Instant::now();
    let taken = tokio::task::spawn_blocking(move || {
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .map_err(|e| format!("cannot clear {}: {e}", root.display()))?;
        }
        crate::private::dir(&root).map_err(|e| e.to_string())?;
        let id = crate::store::now_ms().to_string();
        let manifest = store.backup(&root.join(&id)).map_err(|e| e.to_string())?;
        Ok::<_, String>((id, manifest))
    })
    .await
    .unwrap_or_else(|e| Err(format!("the backup task failed: {e}")));
    match taken {
        Ok((id, manifest)) => {
            let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
            tracing::info!(
                id = %id,
                events = manifest.counts.events,
                bytes,
                took_ms = started.elapsed().as_millis() as u64,
                "backup taken"
            );
            json(
                StatusCode::OK,
                &serde_json::json!({ "id": id, "manifest": manifest }),
            )
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the backup could not be taken: {e}"),
        ),
    }
}

/// Part of one file of a staged backup, from `offset`.
pub(super) fn chunk(state: &ApiState, id: &str, file: &[&str], offset: u64) -> Response<Body> {
    let Some(dir) = staged(state, id).filter(|d| d.is_dir()) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such backup (only the latest is kept, until it is fetched and removed); take one with POST /api/v1/backups",
        );
    };
    let name = file.join("/");
    let listed = name == "manifest.json"
        || crate::store::backup_files(&dir).is_ok_and(|names| names.contains(&name));
    if !listed {
        return error(
            StatusCode::NOT_FOUND,
            format!("{name:?} is not a file of backup {id}"),
        );
    }
    match read_part(&dir.join(&name), offset) {
        Ok(bytes) => {
            let mut resp = Response::new(Full::new(Bytes::from(bytes)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            resp
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {name}: {e}"),
        ),
    }
}

fn read_part(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut out = Vec::new();
    file.take(CHUNK as u64).read_to_end(&mut out)?;
    Ok(out)
}

/// Remove a staged backup.
pub(super) fn remove(state: &ApiState, id: &str) -> Response<Body> {
    match staged(state, id).filter(|d| d.is_dir()) {
        Some(dir) => match std::fs::remove_dir_all(&dir) {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "removed": id })),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot remove backup {id}: {e}"),
            ),
        },
        None => error(StatusCode::NOT_FOUND, "no such backup"),
    }
}
