//! The shared catalog: the tables and views every SQL session and every
//! submitted script sees. Sessions (`weir sql`, the Postgres endpoint, the
//! Rust [`Engine`](crate::Engine) on a cluster) register their `CREATE
//! TABLE`s and `CREATE VIEW`s here (one namespace, in creation order); with
//! `coordinator.state_dir` set the catalog is written to
//! `<state_dir>/catalog.json` on every change, so tables and views survive
//! a coordinator restart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::Status;
use tracing::warn;
use weir_proto as pb;

/// One table or view: its name and the DDL that defined it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct TableEntry {
    pub name: String,
    pub ddl: String,
}

impl TableEntry {
    /// True for a `CREATE VIEW`.
    pub fn ddl_is_view(&self) -> bool {
        crate::cluster_session::is_view(&self.ddl)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CatalogFile {
    version: u64,
    tables: Vec<TableEntry>,
}

/// The catalog in memory, and the file that keeps it.
#[derive(Debug, Default)]
pub(super) struct Catalog {
    contents: CatalogFile,
    file: Option<PathBuf>,
}

impl Catalog {
    /// The catalog kept in `state_dir` (loaded when the file exists), or an
    /// in-memory one without a state directory.
    pub fn open(state_dir: Option<&Path>) -> Self {
        let file = state_dir.map(|d| d.join("catalog.json"));
        let contents = match &file {
            Some(f) if f.exists() => match std::fs::read(f)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(contents) => contents,
                Err(e) => {
                    warn!(file = %f.display(), error = %e, "cannot read the catalog; starting empty");
                    CatalogFile::default()
                }
            },
            _ => CatalogFile::default(),
        };
        Self { contents, file }
    }

    /// The tables in creation order.
    pub fn tables(&self) -> &[TableEntry] {
        &self.contents.tables
    }

    /// The catalog as the API returns it.
    pub fn to_proto(&self) -> pb::Catalog {
        pb::Catalog {
            tables: self
                .contents
                .tables
                .iter()
                .map(|t| pb::CatalogTable {
                    name: t.name.clone(),
                    ddl: t.ddl.clone(),
                })
                .collect(),
            version: self.contents.version,
        }
    }

    /// Adds a table; the name must be free.
    pub fn create(&mut self, name: &str, ddl: &str) -> Result<(), Status> {
        if name.is_empty() || ddl.trim().is_empty() {
            return Err(Status::invalid_argument("a table needs a name and its DDL"));
        }
        if self.contents.tables.iter().any(|t| t.name == name) {
            return Err(Status::already_exists(format!(
                "a table or view '{name}' already exists"
            )));
        }
        self.contents.tables.push(TableEntry {
            name: name.to_string(),
            ddl: ddl.to_string(),
        });
        self.changed()
    }

    /// Removes a table.
    pub fn drop_table(&mut self, name: &str) -> Result<(), Status> {
        let before = self.contents.tables.len();
        self.contents.tables.retain(|t| t.name != name);
        if self.contents.tables.len() == before {
            return Err(Status::not_found(format!("table '{name}' not found")));
        }
        self.changed()
    }

    /// Bumps the version and writes the file atomically (a temporary file
    /// renamed over the old one). A write failure is the caller's error: a
    /// table that would silently vanish on restart is worse than a refusal.
    fn changed(&mut self) -> Result<(), Status> {
        self.contents.version += 1;
        let Some(file) = &self.file else {
            return Ok(());
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let text = serde_json::to_vec_pretty(&self.contents).map_err(std::io::Error::other)?;
            let temp = file.with_extension("json.tmp");
            std::fs::write(&temp, text)?;
            std::fs::rename(&temp, file)
        };
        write().map_err(|e| {
            Status::unavailable(format!("cannot write the catalog {}: {e}", file.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_survive_reopening_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = Catalog::open(Some(dir.path()));
        catalog.create("a", "CREATE TABLE a (x INT)").unwrap();
        catalog.create("b", "CREATE TABLE b (y INT)").unwrap();
        let err = catalog.create("a", "CREATE TABLE a (z INT)").unwrap_err();
        assert_eq!(err.code(), tonic::Code::AlreadyExists);
        catalog.drop_table("a").unwrap();
        assert_eq!(
            catalog.drop_table("a").unwrap_err().code(),
            tonic::Code::NotFound
        );
        let reopened = Catalog::open(Some(dir.path()));
        assert_eq!(reopened.to_proto().version, 3);
        assert_eq!(
            reopened.tables(),
            &[TableEntry {
                name: "b".into(),
                ddl: "CREATE TABLE b (y INT)".into()
            }]
        );
    }

    #[test]
    fn an_unreadable_file_gives_an_empty_catalog() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("catalog.json"), b"{oops").unwrap();
        assert!(Catalog::open(Some(dir.path())).tables().is_empty());
    }
}
