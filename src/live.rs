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

/// How long a reloaded configuration may take to load its keys before the reload is refused.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Live {
    current: ArcSwap<App>,
    /// The current `App`'s background key maintenance (JWKS refresh); replaced on a swap.
    maintenance: std::sync::Mutex<Option<AbortOnDrop>>,
    /// The file to re-read on reload; `None` for a configuration built in memory.
    source: Option<PathBuf>,
    /// Serializes reloads so two at once cannot interleave.
    reloading: Mutex<()>,
}

impl Live {
    /// Wraps `app` and starts its key maintenance. Call from within a Tokio runtime.
    pub fn new(app: App, source: Option<PathBuf>) -> Live {
        let app = Arc::new(app);
        let maintenance = maintain(&app);
        Live {
            current: ArcSwap::new(app),
            maintenance: std::sync::Mutex::new(Some(maintenance)),
            source,
            reloading: Mutex::new(()),
        }
    }

    /// Stops background work (at shutdown).
    pub fn stop(&self) {
        self.maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
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
        let forward_auth = |config: &Config| config.forward_auth.as_ref().map(|f| f.listen);
        if forward_auth(&config) != forward_auth(&old.config) {
            return Err(
                "forward_auth.listen changed: listeners are bound at start-up; restart to move it"
                    .to_owned(),
            );
        }
        if config.cluster != old.config.cluster {
            return Err(
                "[cluster] changed: the shared state is set up at start-up; restart to change it"
                    .to_owned(),
            );
        }
        let cluster = Arc::clone(old.auth.cluster());
        let app = Arc::new(App::with_cluster(config, cluster).map_err(|err| err.to_string())?);
        // A new `App` fetches its JWKS afresh; it takes over only once it can admit requests.
        let maintenance = maintain(&app);
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        while let Err(missing) = app.auth.readiness() {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("the new configuration is not ready: {missing}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.current.store(app);
        *self.maintenance.lock().unwrap_or_else(|p| p.into_inner()) = Some(maintenance);
        Ok(())
    }
}

/// Starts `app`'s key maintenance; it stops when the returned guard is dropped.
fn maintain(app: &Arc<App>) -> AbortOnDrop {
    let app = Arc::clone(app);
    AbortOnDrop(tokio::spawn(async move { app.auth.maintain_keys().await }))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
