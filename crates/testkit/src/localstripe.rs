//! A private localstripe (a fake of Stripe's API, PyPI `localstripe`) for payment tests.
//!
//! [`Localstripe::start`] runs `localstripe --port <free port> --from-scratch` and waits
//! until it answers. localstripe keeps its state in the fixed file `/tmp/localstripe.pickle`
//! and its webhook registry per process, so the instances of one test process are
//! serialized: a test holds the process-wide lock from `start` until the instance is
//! dropped (then the server is killed). A watchdog kills it too should the test process die
//! without dropping it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// One instance at a time per test process.
static LOCK: LazyLock<Arc<tokio::sync::Mutex<()>>> = LazyLock::new(Arc::default);

/// Args: $1 the test's pid, $2 localstripe's pid.
const WATCHDOG: &str = r#"
while [ -d "/proc/$1" ] && [ -d "/proc/$2" ]; do sleep 0.5; done
kill -TERM "$2" 2>/dev/null
"#;

/// The localstripe program of the test servers' venv (`crate::venv_bin`).
pub fn localstripe_binary() -> Option<PathBuf> {
    crate::venv_bin("localstripe")
}

/// A running localstripe owned by the test; killed on drop.
#[derive(Debug)]
pub struct Localstripe {
    port: u16,
    child: Child,
    log: tempfile::NamedTempFile,
    _watchdog: Child,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Localstripe {
    /// Starts one (waiting for the other instances of this process to end first).
    /// `Ok(None)` when localstripe is not installed (call [`crate::skip_or_fail`]).
    pub async fn start() -> anyhow::Result<Option<Localstripe>> {
        let Some(binary) = localstripe_binary() else {
            return Ok(None);
        };
        let turn = LOCK.clone().lock_owned().await;
        let port = crate::free_port()?;
        let log = tempfile::Builder::new()
            .prefix("localstripe-")
            .suffix(".log")
            .tempfile()?;
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--from-scratch"])
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let test_pid = std::process::id().to_string();
        let child_pid = child.id().to_string();
        let watchdog =
            crate::spawn_watchdog(WATCHDOG, &[test_pid.as_ref(), child_pid.as_ref()], None)?;
        let mut ls = Localstripe {
            port,
            child,
            log,
            _watchdog: watchdog,
            _turn: turn,
        };
        ls.wait_ready().await?;
        Ok(Some(ls))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "localstripe exited ({status}) before answering; its log:\n{}",
                    crate::tail(self.log.path(), 30)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "localstripe did not answer on 127.0.0.1:{} within 30 s; its log:\n{}",
                    self.port,
                    crate::tail(self.log.path(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`: the API base to give Lodge.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines of its log (for a failing test's message).
    pub fn log_tail(&self) -> String {
        crate::tail(self.log.path(), 40)
    }
}

impl Drop for Localstripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
