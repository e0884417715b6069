//! Picks and builds the backend named by `--backend`. Adding a backend adds one
//! arm here and one crate under `backends/`.

use std::sync::Arc;

use sidekick_backend::Backend;
use sidekick_backend_env::EnvBackend;
use sidekick_backend_file::FileBackend;

use crate::config::Settings;

/// Names `--backend` accepts today.
pub(crate) const NAMES: &[&str] = &["file", "env"];

/// A backend that cannot be built from these settings.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("unknown backend {name:?}: expected one of {}", NAMES.join(", "))]
    Unknown { name: String },
    #[error("backend {backend}: {message}")]
    Settings { backend: String, message: String },
}

/// Builds the backend the settings name.
pub(crate) fn build(settings: &Settings) -> Result<Arc<dyn Backend>, BuildError> {
    match settings.backend.as_str() {
        "file" => {
            if settings.files.is_empty() && settings.services_file.is_none() {
                return Err(BuildError::Settings {
                    backend: "file".into(),
                    message: "needs at least one --file PATH (YAML, JSON or TOML file, or a directory of them)"
                        .into(),
                });
            }
            let backend = FileBackend::new(settings.files.clone(), settings.services_file.clone())
                .map_err(|e| BuildError::Settings {
                    backend: "file".into(),
                    message: e.to_string(),
                })?;
            Ok(Arc::new(backend))
        }
        "env" => Ok(Arc::new(EnvBackend::new())),
        other => Err(BuildError::Unknown {
            name: other.to_string(),
        }),
    }
}
