//! A client of a Confluent-compatible schema registry (REST API v1), for the
//! `avro-confluent` format: looks up writer schemas by id for the source and
//! registers the sink's schema under its subject.
//!
//! Calls are rare (once per schema id, once per sink subtask) and come from
//! synchronous decode and encode paths, so each runs to completion on a
//! short-lived thread of its own, with a timeout, rather than on the task's
//! runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use weir_engine::{Error, Result};

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A schema registry at one URL, with the schemas it has returned.
#[derive(Debug)]
pub struct SchemaRegistry {
    url: String,
    /// `user:password` for HTTP basic authentication.
    user_info: Option<String>,
    schemas: Mutex<HashMap<u32, Option<Arc<str>>>>,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

impl SchemaRegistry {
    /// A client of the registry at `url` (`http://host:port`).
    pub fn new(url: &str, user_info: Option<String>) -> Result<Self> {
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "the schema registry URL '{url}' must start with http:// or https://"
            )));
        }
        Ok(SchemaRegistry {
            url,
            user_info,
            schemas: Mutex::new(HashMap::new()),
        })
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Avro schema with this id; `None` when the registry has none.
    /// Answers are cached, so each id is fetched once.
    pub fn schema_by_id(&self, id: u32) -> Result<Option<Arc<str>>> {
        if let Some(known) = self.lock()?.get(&id) {
            return Ok(known.clone());
        }
        let url = format!("{}/schemas/ids/{id}", self.url);
        let (status, body) = self.request(reqwest::Method::GET, url, None)?;
        let schema = match status {
            200 => {
                let response: SchemaResponse = serde_json::from_str(&body).map_err(|e| {
                    self.error(format!("schema {id}: unexpected response {body:?}: {e}"))
                })?;
                if let Some(kind) = response.schema_type.filter(|t| t != "AVRO") {
                    return Err(Error::BadInput(format!(
                        "schema {id} in registry {} is a {kind} schema, not Avro",
                        self.url
                    )));
                }
                Some(Arc::<str>::from(response.schema))
            }
            404 => None,
            _ => return Err(self.error(format!("looking up schema {id}: HTTP {status}: {body}"))),
        };
        self.lock()?.insert(id, schema.clone());
        Ok(schema)
    }

    /// Registers `schema` under `subject` (or finds it there) and returns
    /// its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let url = format!("{}/subjects/{subject}/versions", self.url);
        let body = serde_json::json!({ "schema": schema }).to_string();
        let (status, text) = self.request(reqwest::Method::POST, url, Some(body))?;
        match status {
            200 => {
                let response: IdResponse = serde_json::from_str(&text)
                    .map_err(|e| self.error(format!("unexpected response {text:?}: {e}")))?;
                self.lock()?
                    .insert(response.id, Some(Arc::<str>::from(schema)));
                Ok(response.id)
            }
            409 | 422 => Err(Error::Config(format!(
                "the schema registry {} refused the schema for subject '{subject}' \
                 (HTTP {status}: {text}); is it compatible with the subject's earlier versions?",
                self.url
            ))),
            _ => Err(self.error(format!(
                "registering subject '{subject}': HTTP {status}: {text}"
            ))),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<u32, Option<Arc<str>>>>> {
        self.schemas
            .lock()
            .map_err(|_| Error::internal("the schema cache's lock is poisoned"))
    }

    fn error(&self, message: String) -> Error {
        Error::Connector {
            connector: "kafka".into(),
            message: format!("schema registry {}: {message}", self.url),
        }
    }

    /// One request, on a thread of its own; the status and body.
    fn request(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<String>,
    ) -> Result<(u16, String)> {
        let user_info = self.user_info.clone();
        let run = move || -> std::result::Result<(u16, String), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let client = reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .map_err(|e| e.to_string())?;
                let mut request = client
                    .request(method, &url)
                    .header("Accept", "application/vnd.schemaregistry.v1+json");
                if let Some((user, password)) = user_info.as_deref().and_then(|u| u.split_once(':'))
                {
                    request = request.basic_auth(user, Some(password));
                }
                if let Some(body) = body {
                    request = request
                        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                        .body(body);
                }
                let response = request.send().await.map_err(|e| e.to_string())?;
                let status = response.status().as_u16();
                let text = response.text().await.map_err(|e| e.to_string())?;
                Ok((status, text))
            })
        };
        let outcome = std::thread::Builder::new()
            .name("weir-schema-registry".into())
            .spawn(run)
            .map_err(|e| self.error(format!("cannot start a request thread: {e}")))?
            .join()
            .map_err(|_| self.error("the request thread panicked".into()))?;
        outcome.map_err(|e| self.error(e))
    }
}
