//! A schema registry for the tests: the part of Confluent's REST API that
//! Avro serializers use, served over HTTP on 127.0.0.1 from a thread of its
//! own. No compatibility checks; schemas are deduplicated by their text, ids
//! are global, as in Confluent's registry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Registry {
    /// Schemas by id (ids start at 1).
    schemas: Vec<String>,
    /// Per subject: the ids of its versions, in order.
    subjects: BTreeMap<String, Vec<u32>>,
    /// Requests served, by kind.
    lookups: u32,
}

type Shared = Arc<Mutex<Registry>>;

/// A running registry; it stops with the test process.
pub struct SchemaRegistry {
    addr: SocketAddr,
    state: Shared,
}

impl Registry {
    fn id_of(&mut self, schema: &str) -> u32 {
        match self.schemas.iter().position(|s| s == schema) {
            Some(i) => i as u32 + 1,
            None => {
                self.schemas.push(schema.to_string());
                self.schemas.len() as u32
            }
        }
    }
}

fn not_found(code: u32, message: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error_code": code, "message": message })),
    )
}

async fn schema_by_id(
    State(state): State<Shared>,
    Path(id): Path<u32>,
) -> (StatusCode, Json<Value>) {
    let mut registry = state.lock().unwrap();
    registry.lookups += 1;
    match id
        .checked_sub(1)
        .and_then(|i| registry.schemas.get(i as usize))
    {
        Some(schema) => (StatusCode::OK, Json(json!({ "schema": schema }))),
        None => not_found(40403, "Schema not found"),
    }
}

async fn register(
    State(state): State<Shared>,
    Path(subject): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let Some(schema) = body.get("schema").and_then(Value::as_str) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error_code": 42201, "message": "Invalid schema" })),
        );
    };
    let mut registry = state.lock().unwrap();
    let id = registry.id_of(schema);
    let versions = registry.subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    (StatusCode::OK, Json(json!({ "id": id })))
}

async fn latest(
    State(state): State<Shared>,
    Path(subject): Path<String>,
) -> (StatusCode, Json<Value>) {
    let registry = state.lock().unwrap();
    match registry.subjects.get(&subject).and_then(|v| v.last()) {
        Some(&id) => (
            StatusCode::OK,
            Json(json!({
                "subject": subject,
                "version": registry.subjects[&subject].len(),
                "id": id,
                "schema": registry.schemas[id as usize - 1],
            })),
        ),
        None => not_found(40401, "Subject not found"),
    }
}

impl SchemaRegistry {
    /// Starts a registry on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/schemas/ids/{id}", get(schema_by_id))
            .route("/subjects/{subject}/versions", post(register))
            .route("/subjects/{subject}/versions/latest", get(latest))
            .with_state(Arc::clone(&state));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        SchemaRegistry { addr, state }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers `schema` under `subject` directly; its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        let mut registry = self.state.lock().unwrap();
        let id = registry.id_of(schema);
        let versions = registry.subjects.entry(subject.to_string()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        id
    }

    /// The schema with this id.
    pub fn schema(&self, id: u32) -> Option<String> {
        let registry = self.state.lock().unwrap();
        registry.schemas.get(id.checked_sub(1)? as usize).cloned()
    }

    /// The ids registered under `subject`.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        let registry = self.state.lock().unwrap();
        registry.subjects.get(subject).cloned().unwrap_or_default()
    }

    /// How many lookups by id were served.
    pub fn lookups(&self) -> u32 {
        self.state.lock().unwrap().lookups
    }
}
