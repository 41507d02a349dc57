//! The live configuration: the current [`App`] behind an atomic pointer, and reloading it.
//!
//! A request takes the `App` current when it starts and keeps it to the end, so a reload never
//! changes the rules under a request in flight; new requests see the new `App` at once. A
//! configuration that fails validation is refused with every problem logged, and the old
//! one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tracing::{error, info};

use crate::config::Config;
use crate::handler::App;
use crate::telemetry;

pub struct Live {
    current: ArcSwap<App>,
    /// The file to re-read on reload; `None` for a configuration built in memory.
    source: Option<PathBuf>,
    /// Serializes reloads so two at once cannot interleave.
    reloading: Mutex<()>,
}

impl Live {
    pub fn new(app: App, source: Option<PathBuf>) -> Live {
        Live {
            current: ArcSwap::from_pointee(app),
            source,
            reloading: Mutex::new(()),
        }
    }

    pub fn has_source(&self) -> bool {
        self.source.is_some()
    }

    /// The `App` new requests are served with.
    pub fn app(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// Re-reads the configuration file (keys, certificates, JWKS files included), validates
    /// it fully and swaps it in. On any problem the current configuration stays.
    pub async fn reload(&self) -> Result<(), String> {
        let _guard = self.reloading.lock().await;
        let result = self.try_reload().await;
        telemetry::reload(result.is_ok());
        match &result {
            Ok(()) => info!("configuration reloaded"),
            Err(problems) => {
                error!(problems = %problems, "configuration reload refused; the previous configuration keeps serving")
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<(), String> {
        let path = self
            .source
            .clone()
            .ok_or("this configuration was not loaded from a file")?;
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|err| format!("reload task failed: {err}"))?
            .map_err(|problems| problems.to_string().replace('\n', "; "))?;
        let old = self.app();
        if config.server.listen != old.config.server.listen {
            return Err(
                "server.listen changed: listeners are bound at start-up; restart to move them"
                    .to_owned(),
            );
        }
        let app = App::new(config).map_err(|err| err.to_string())?;
        self.current.store(Arc::new(app));
        Ok(())
    }
}
