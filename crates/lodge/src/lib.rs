//! The `lodge` binary's library half: configuration and starting a node, so the integration
//! tests boot exactly what `lodge serve` runs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use lodge_core::{Clock, Currency, SystemClock};
use lodge_http::{AppState, HttpConfig};
use lodge_services::crypto::Sealer;
use lodge_services::{Lodge, Settings};
use lodge_store::Store;
use rand::RngCore;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use tokio::net::TcpListener;

/// `println!` for a command's output: a reader that went away (`lodge jobs list | head -1`)
/// ends the command quietly, as other command-line tools do, instead of a panic ("failed
/// printing to stdout: Broken pipe", found by the PostgreSQL audit); another write error
/// ends it with a message.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::output_failed(&e);
        }
    }};
}

/// Ends the process after a failed write of a command's output (see [`out!`]).
pub fn output_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("lodge: writing the output: {e}");
    std::process::exit(1);
}

pub mod bench;
pub mod config;
pub mod demo_nginx;
pub mod serve;
pub mod simulate;

pub use config::Config;

/// Opens the store (applying migrations) and builds the services, for a command.
pub async fn open(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Lodge> {
    open_as(cfg, clock, Opener::Command).await
}

/// [`open`] for a node (`serve`, `worker`) or the demo's seeding: on PostgreSQL a secret key
/// made just now becomes the installation's ([`Lodge::check_secret_key`]).
pub async fn open_node(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Lodge> {
    open_as(cfg, clock, Opener::Node).await
}

/// [`open`] for `lodge seal`, whose output only the installation's key opens: refused on
/// PostgreSQL when the key was made just now and no node has made one the installation's
/// yet (found by the PostgreSQL audit: `seal` run before the first node, or in another
/// directory, sealed with a key of its own that no node would ever hold, and the registrar
/// configured with that value failed at its first use).
pub async fn open_sealing(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Lodge> {
    open_as(cfg, clock, Opener::Seal).await
}

/// [`open`] for `lodge catalog import` and `export`: the catalog's prices may be in another
/// currency (a catalog imported by mistake with another `--currency`), which an import
/// replaces.
pub async fn open_importing(cfg: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Lodge> {
    open_as(cfg, clock, Opener::Import).await
}

/// What opens the store: see [`open`], [`open_node`], [`open_sealing`], [`open_importing`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opener {
    Command,
    Node,
    Seal,
    Import,
}

/// On PostgreSQL, warns when two nodes of this pool size would take every connection the
/// server gives (found by the fault audit: with `max_connections = 10`, one node kept eight
/// after a busy moment, the other answered 503 for over a minute and its jobs used up their
/// attempts; no one could even connect with psql).
async fn warn_of_a_small_server(store: &Store, pool_size: u32) {
    if store.engine() != lodge_store::Engine::Postgres {
        return;
    }
    match store.postgres_connections().await {
        Ok(open) if i64::from(pool_size) * 2 > open => tracing::warn!(
            server_connections = open,
            pool_size,
            "PostgreSQL gives {open} connections and each Lodge node may open up to {pool_size} (a busy moment's stay open for a minute): set --database-pool-size (LODGE_DATABASE_POOL_SIZE) so that the nodes together stay under it with room to spare, or raise max_connections"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "reading PostgreSQL's max_connections failed"),
    }
}

async fn open_as(cfg: &Config, clock: Arc<dyn Clock>, opener: Opener) -> anyhow::Result<Lodge> {
    let store = Store::open_sized(&cfg.database_url, cfg.database_pool_size)
        .await
        .with_context(|| format!("opening {}", lodge_store::redact_url(&cfg.database_url)))?;
    if matches!(opener, Opener::Node) {
        warn_of_a_small_server(&store, cfg.database_pool_size).await;
    }
    // On PostgreSQL the node's time is the database server's from now on (see
    // [`keep_clock_aligned`]), before anything is written with it.
    if let Some(aligned) = clock.aligned() {
        align_clock(&store, aligned, true).await;
        warn_of_a_future_invoice_stamp(&store, clock.now()).await;
    }
    let currency = Currency::parse(&cfg.currency.to_uppercase())
        .with_context(|| format!("currency {:?}", cfg.currency))?;
    let jwt_secret = match &cfg.jwt_secret {
        Some(s) => s.clone(),
        None => {
            let mut bytes = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut bytes);
            SecretString::from(hex::encode(bytes))
        }
    };
    let mut settings = Settings::new(currency, jwt_secret);
    settings.key_prefix = cfg.key_prefix.clone();
    settings.node_name = cfg.node_name.clone();
    settings.bank_transfer_instructions = cfg.bank_transfer_instructions.clone();
    cfg.validate()?;
    settings.invoice_expiry_days = cfg.invoice_expiry_days;
    settings.retention_days = cfg.retention_days;
    settings.policy = cfg.policy()?;
    settings.require_tos = cfg.require_tos;
    settings.nginx = cfg.nginx.clone();
    settings.php = cfg.php.clone();
    settings.webhooks_allow_private = cfg.webhooks_allow_private;
    settings.mail = cfg.mail_settings()?;
    // On PostgreSQL only a node makes a key file: one a command (`migrate`, `users create`,
    // …) made in its working directory was taken by the next command there for the
    // installation's, which then refused the key the nodes were given (found by the
    // multi-node audit). Such a command runs with a key of its own, in memory.
    let postgres = store.engine() == lodge_store::Engine::Postgres;
    let make_file = !postgres || opener == Opener::Node;
    let (sealer, made_key_file, fresh) = match &cfg.secret_key {
        Some(k) => (
            Sealer::from_hex(k.expose_secret()).context("LODGE_SECRET_KEY")?,
            None,
            false,
        ),
        None => {
            let (key, path, from) = key_file(&cfg.database_url, make_file)?;
            let sealer = Sealer::from_hex(&key)
                .with_context(|| format!("the key file {}", path.display()))?;
            let made = (from == KeyFrom::MadeFile).then_some(path);
            (sealer, made, from != KeyFrom::File)
        }
    };
    let mut lodge = Lodge::new(store, clock, settings, sealer);
    // A command given no key on PostgreSQL, refused by an installation that has one: said
    // so, rather than that the key (which it was not given) is not the installation's.
    let checked = match lodge.check_secret_key(fresh, opener == Opener::Node).await {
        Err(lodge_services::ServiceError::Conflict(_))
            if fresh && postgres && matches!(opener, Opener::Command | Opener::Import) =>
        {
            Err(anyhow::anyhow!(
                "no secret key was given (LODGE_SECRET_KEY, or the lodge-secret.key file in \
                 the working directory), and this PostgreSQL installation's secrets need it: \
                 give this command the key the nodes run with"
            ))
        }
        other => other.map_err(|e| anyhow::anyhow!("{e}")),
    };
    let checked = match checked {
        Ok(())
            if opener == Opener::Seal
                && fresh
                && lodge.store.engine() == lodge_store::Engine::Postgres =>
        {
            Err(anyhow::anyhow!(
                "no secret key was given (LODGE_SECRET_KEY, or the lodge-secret.key file in \
                 the working directory) and this PostgreSQL installation has none yet: a \
                 value sealed with a key made just now would open on no node. Give the key \
                 the nodes run with, or start the first node and seal with its key"
            ))
        }
        other => other,
    };
    if let Err(e) = checked {
        // A key file made just now for a database it does not open is removed again: left
        // there, the next start would take it for the installation's.
        if let Some(path) = &made_key_file {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    if opener != Opener::Node {
        lodge.mail_as_the_installation();
    }
    lodge
        .check_currency(opener != Opener::Import)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if opener == Opener::Node {
        lodge
            .adopt_currency()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if let Some(r) = lodge_services::registrar::config::from_files(&cfg.registrars, &lodge.sealer)
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        lodge.registrar = Some(r);
    }
    if let Some(dns) = &cfg.dns {
        let client =
            lodge_services::dns::PowerDns::new(dns.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        lodge.dns = Some(Arc::new(client));
    }
    if let Some(acme) = &cfg.acme {
        lodge.acme = Some(Arc::new(acme.settings()?));
    }
    if let Some(m) = &cfg.mariadb {
        let client = lodge_services::mariadb::MariaDb::new(m.clone())
            .map_err(|e| anyhow::anyhow!("--mariadb-url: {e}"))?;
        lodge.mariadb = Some(Arc::new(client));
    }
    if let Some(stripe) = &cfg.stripe {
        let client = lodge_services::gateway::Stripe::new(stripe.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        lodge.stripe = Some(Arc::new(client));
    }
    // Whether mail is on is recorded by the nodes that run ([`start_node`]), not by every
    // command: a `lodge keys list` run without the SMTP settings switched mail off for the
    // running servers (found by the operator audit).
    // Invoices issued before payment tokens were stored as digests (once; nothing to do
    // on a converted database).
    lodge
        .convert_payment_tokens()
        .await
        .context("converting payment tokens to digests")?;
    // Webhook URLs stored in the clear by an earlier build (once).
    lodge
        .seal_webhook_urls()
        .await
        .context("sealing webhook URLs")?;
    Ok(lodge)
}

/// What a node (`serve`, `worker`) does once opened, before it serves or works: records
/// whether this installation sends mail (its SMTP settings).
pub async fn start_node(lodge: &Lodge) -> anyhow::Result<()> {
    lodge
        .switch_mail()
        .await
        .context("recording whether mail is on")
}

/// The file of a `sqlite://` database URL (`None` for PostgreSQL and in-memory SQLite).
pub fn sqlite_file(database_url: &str) -> Option<std::path::PathBuf> {
    let rest = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// The directory a file is in (`.` for a bare file name).
fn dir_of(file: &std::path::Path) -> &std::path::Path {
    file.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
}

/// Takes the lock that makes `serve` the only server of the SQLite database `db`: an
/// exclusive lock on `<db>-lodge.lock` beside it, released when the returned file is
/// dropped (or the process ends, however it ends). Refused, naming the holder's process,
/// while another `serve` holds it.
pub fn serve_lock(db: &std::path::Path) -> anyhow::Result<std::fs::File> {
    lock_file(
        &beside(db, "-lodge.lock"),
        &format!(
            "holds {} already: one server a SQLite database (stop it first; several nodes need PostgreSQL, see the README)",
            canonical(db).display()
        ),
        Lock::Exclusive("serve"),
    )
}

/// Takes the lock every `lodge worker` on the SQLite database `db` shares (a shared lock on
/// `<db>-lodge-worker.lock`), so that `copy-to` can tell none runs.
pub fn worker_lock(db: &std::path::Path) -> anyhow::Result<std::fs::File> {
    lock_file(
        &beside(db, "-lodge-worker.lock"),
        "is copying this database (wait for it to end)",
        Lock::Shared,
    )
}

/// Takes both locks of the SQLite database `db` for `copy-to` (no `serve` nor `worker` writes
/// to it meanwhile, nor starts). `None` where the locks cannot be made (the database's
/// directory is read-only: no server can write there either).
pub fn copy_locks(db: &std::path::Path) -> anyhow::Result<Option<[std::fs::File; 2]>> {
    let read_only = |e: &anyhow::Error| {
        e.root_cause()
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                )
            })
    };
    let serving = format!("is serving {} (stop it first)", canonical(db).display());
    let served = match lock_file(
        &beside(db, "-lodge.lock"),
        &serving,
        Lock::Exclusive("copy-to"),
    ) {
        Ok(f) => f,
        Err(e) if read_only(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let working = lock_file(
        &beside(db, "-lodge-worker.lock"),
        &format!(
            "runs jobs on {} (stop it first: what it writes after the copy's snapshot would be lost)",
            canonical(db).display()
        ),
        Lock::Exclusive("copy-to"),
    )
    .map_err(|e| e.context("a `lodge worker`"))?;
    Ok(Some([served, working]))
}

/// `db` as one name, however it is given (a relative path, a symlinked directory, a
/// symlink to the file itself: found by the operator audit), so that one file has one lock.
fn canonical(db: &std::path::Path) -> std::path::PathBuf {
    std::fs::canonicalize(db).unwrap_or_else(|_| {
        std::fs::canonicalize(dir_of(db))
            .ok()
            .zip(db.file_name())
            .map_or_else(|| db.to_path_buf(), |(d, f)| d.join(f))
    })
}

/// The file beside `db` named as it is plus `suffix`.
fn beside(db: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = canonical(db).into_os_string();
    name.push(suffix);
    std::path::PathBuf::from(name)
}

/// Takes the lock that makes this `serve --demo` the only user of the demo nginx state
/// under `data` (another one, even on another database, would stop that nginx: found by
/// the re-audit).
pub fn demo_lock(data: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    lock_file(
        &data.join("demo-lodge.lock"),
        &format!(
            "runs the demo's nginx from {} already (stop it first)",
            data.display()
        ),
        Lock::Exclusive("serve"),
    )
}

/// How [`lock_file`] locks: alone, as the command named (written in the file for whoever is
/// refused), or shared with others of its kind.
#[derive(Debug, Clone, Copy)]
enum Lock {
    Exclusive(&'static str),
    Shared,
}

/// A lock on `path` ([`Lock`]), holding this process's id and command.
/// Refused while another process holds it (exclusively, or at all for an exclusive one),
/// naming that process and saying `what` it does.
fn lock_file(path: &std::path::Path, what: &str, how: Lock) -> anyhow::Result<std::fs::File> {
    use std::io::{Read, Seek, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let locked = match how {
        Lock::Exclusive(_) => file.try_lock(),
        Lock::Shared => file.try_lock_shared(),
    };
    match locked {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // "<pid> <command>" (a file an older build wrote holds the pid of a `serve`).
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let (pid, command) = holder.split_once(' ').unwrap_or((holder, "serve"));
            anyhow::bail!(
                "another `lodge {command}`{} {what}",
                if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (process {pid})")
                },
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    // A shared lock's holders each write theirs: the file names one of them.
    let command = match how {
        Lock::Exclusive(command) => command,
        Lock::Shared => "worker",
    };
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{} {command}", std::process::id())?;
    file.flush()?;
    Ok(file)
}

/// Without a configured secret key, the key lives in `lodge-secret.key` beside the SQLite
/// database (or in the working directory), created on first use, readable by its owner only.
/// Where [`key_file`]'s key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFrom {
    /// The file, as it was.
    File,
    /// Made just now, and written to the file.
    MadeFile,
    /// Made just now, in memory only (no file was to be made).
    Made,
}

/// Where the secret key file of an installation on `database_url` is (beside a SQLite
/// database, else in the working directory), whether or not it exists.
pub fn key_file_path(database_url: &str) -> std::path::PathBuf {
    sqlite_file(database_url)
        .map_or_else(
            || std::path::PathBuf::from("."),
            |db| dir_of(&db).to_path_buf(),
        )
        .join("lodge-secret.key")
}

/// The key file's key, its path, and where the key came from: without a file, one is made
/// (and written to the file when `make_file`).
fn key_file(
    database_url: &str,
    make_file: bool,
) -> anyhow::Result<(String, std::path::PathBuf, KeyFrom)> {
    let path = key_file_path(database_url);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok((existing.trim().to_owned(), path, KeyFrom::File));
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    if !make_file {
        return Ok((key, path, KeyFrom::Made));
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    match opts.open(&path) {
        Ok(mut f) => {
            f.write_all(key.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::warn!(path = %path.display(), "no LODGE_SECRET_KEY configured: created a key file; back it up, apart from the database's backups (sealed secrets need it; see Backups in the README)");
            Ok((key, path, KeyFrom::MadeFile))
        }
        // Another process created it first.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok((key.trim().to_owned(), path, KeyFrom::File))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The clock production uses: the system's, kept to the database server's time on
/// PostgreSQL ([`lodge_core::AlignedClock`], aligned when the store is opened and, on a
/// node, every [`CLOCK_ALIGN_EVERY`] by [`keep_clock_aligned`]).
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(lodge_core::AlignedClock::new(Arc::new(SystemClock)))
}

/// How often a node measures its clock against the database server's again.
pub const CLOCK_ALIGN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A machine clock this far from the database server's is warned about (Lodge keeps to the
/// database's time either way; clocks that far apart are worth fixing with NTP).
const CLOCK_WARN_OFFSET: jiff::SignedDuration = jiff::SignedDuration::from_secs(1);

/// Measures `clock` against `store`'s server once ([`lodge_store::Store::align_clock`]),
/// logging an offset of a second or more (always when `announce`, else when it changed by a
/// second or more: a machine clock that jumped) and a measurement that failed.
pub async fn align_clock(store: &Store, clock: &lodge_core::AlignedClock, announce: bool) {
    let before = clock.offset();
    match store
        .align_clock(clock, jiff::SignedDuration::from_millis(500))
        .await
    {
        Ok(Some(offset)) => {
            let jumped = (offset - before).abs() >= CLOCK_WARN_OFFSET;
            if offset.abs() >= CLOCK_WARN_OFFSET && (announce || jumped) {
                tracing::warn!(
                    offset_secs = offset.as_secs_f64(),
                    "this machine's clock is {:.1} s {} the database server's: Lodge keeps to the database's time (so that its nodes agree); set the machines' clocks right with NTP",
                    offset.abs().as_secs_f64(),
                    if offset.is_negative() { "ahead of" } else { "behind" }
                );
            } else if jumped {
                tracing::info!(
                    offset_secs = offset.as_secs_f64(),
                    "this machine's clock is back in step with the database server's"
                );
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "measuring the clock against the database server's failed; keeping the last offset")
        }
    }
}

/// Logs an invoice counter stamped in the future (on PostgreSQL, left by a node or command
/// whose clock was ahead before nodes kept to the database's time): invoices are issued no
/// earlier than that stamp, so until then they are dated then (found by review).
async fn warn_of_a_future_invoice_stamp(store: &Store, now: jiff::Timestamp) {
    if store.engine() != lodge_store::Engine::Postgres {
        return;
    }
    match lodge_store::counter_stamp(store.reader(), "invoice_number").await {
        Ok(Some(stamp)) if stamp > now.as_microsecond() + 60_000_000 => {
            let at = jiff::Timestamp::from_microsecond(stamp)
                .map_or_else(|_| stamp.to_string(), |t| t.to_string());
            tracing::warn!(
                stamp = %at,
                "the invoice counter is stamped {at}, in the future (a node or command whose clock was ahead numbered invoices): invoices issued before then are dated {at}; correct it with UPDATE counters SET stamp = <unix microseconds> WHERE name = 'invoice_number' if that is wrong"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the invoice counter failed"),
    }
}

/// On a node whose clock is aligned to its PostgreSQL server's: measures it again every
/// [`CLOCK_ALIGN_EVERY`] until `shutdown` (a machine clock stepped or drifting is followed
/// within seconds). `None` on SQLite or with another clock (tests' manual ones).
pub fn keep_clock_aligned(
    lodge: &Lodge,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if lodge.store.engine() != lodge_store::Engine::Postgres {
        return None;
    }
    lodge.clock.aligned()?;
    let (store, clock) = (lodge.store.clone(), lodge.clock.clone());
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(CLOCK_ALIGN_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if let Some(aligned) = clock.aligned() {
                align_clock(&store, aligned, false).await;
            }
        }
    }))
}

/// How often a node looks at its idle PostgreSQL connections, and how many looks make a
/// trim ([`keep_pool_trimmed`]).
const POOL_LOOK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const POOL_LOOKS_A_TRIM: usize = 12;

/// Idle connections a node keeps open at least.
const POOL_KEEP_IDLE: usize = 2;

/// On PostgreSQL: every minute, closes the connections the node left idle throughout it
/// (the fewest idle at any of its looks), keeping two, so that the connections a busy
/// moment opened go back to the server within a minute or two of it (found by the fault
/// audit: one node kept the eight of a burst for good, and a second node, on a server of
/// ten, answered 503 for over a minute). sqlx's own idle timeout is not used (see
/// `lodge_store`'s pool). `None` on SQLite.
pub fn keep_pool_trimmed(
    lodge: &Lodge,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if lodge.store.engine() != lodge_store::Engine::Postgres {
        return None;
    }
    let store = lodge.store.clone();
    Some(tokio::spawn(async move {
        let mut fewest = usize::MAX;
        let mut looks = 0;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POOL_LOOK_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            fewest = fewest.min(store.idle_connections());
            looks += 1;
            if looks == POOL_LOOKS_A_TRIM {
                let spare = fewest.saturating_sub(POOL_KEEP_IDLE);
                if spare > 0 {
                    let closed = store.shed_idle(spare).await;
                    tracing::debug!(closed, "idle PostgreSQL connections closed");
                }
                (fewest, looks) = (usize::MAX, 0);
            }
        }
    }))
}

/// A node serving HTTP in the background.
pub struct Server {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when it has a listener of its own (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `cfg.listen` (port 0 picks a free port) and serves until stopped, with the
    /// slow-client limits and connection cap of `cfg.conn` (see [`serve`]).
    pub async fn start(cfg: &Config, lodge: Lodge) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let metrics_listener = match &cfg.metrics_listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .with_context(|| format!("binding --metrics-listen {a}"))?,
            ),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let public_base_url = if cfg.public_base_url.ends_with(":0") {
            format!("http://{addr}")
        } else {
            cfg.public_base_url.clone()
        };
        let metrics_access = lodge_http::metrics::MetricsAccess {
            token_digest: None,
            on_main_listener: metrics_listener.is_none(),
        }
        .with_token(cfg.metrics_token.as_ref().map(|t| t.expose_secret().trim()));
        let state = AppState::new(
            lodge,
            &HttpConfig {
                public_base_url,
                rate_limit_per_minute: cfg.rate_limit_per_minute,
                rate_limit_burst: cfg.rate_limit_burst,
                login: cfg.login,
                metrics_access,
                cors_origins: cfg.cors_origins.clone(),
                trusted_proxies: cfg.trusted_proxies()?,
            },
        )?;
        let app = lodge_http::router(state.clone());
        let housekeeping = lodge_http::spawn_housekeeping(&state);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let metrics_task = metrics_listener.map(|l| {
            let app = lodge_http::metrics::router(state.clone());
            tokio::spawn(serve::serve(l, app, cfg.conn, rx.clone()))
        });
        let limits = cfg.conn;
        let task = tokio::spawn(async move {
            let r = serve::serve(listener, app, limits, rx).await;
            let m = match metrics_task {
                Some(t) => t.await.map_err(std::io::Error::other).and_then(|r| r),
                None => Ok(()),
            };
            housekeeping.abort();
            r.and(m)
        });
        Ok(Server {
            addr,
            metrics_addr,
            state,
            shutdown: Some(tx),
            task,
        })
    }

    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        (&mut self.task).await??;
        Ok(())
    }

    /// Waits until the server ends on its own (an I/O error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await??;
        Ok(())
    }
}

/// Turns off, whatever the operator's filter says, the logs of libraries that write
/// secrets: instant-epp logs each EPP request's XML at debug (the login's password, a
/// transfer's authInfo) and a whole reply at error when it cannot read it (a domain's
/// authInfo, contacts); Lodge logs its own, redacted, errors instead (found by review of
/// the EPP client).
pub fn quiet_secret_loggers(
    filter: tracing_subscriber::EnvFilter,
) -> tracing_subscriber::EnvFilter {
    match "instant_epp=off".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

#[cfg(test)]
mod log_tests {
    #[test]
    fn the_epp_library_is_silent_even_at_trace() {
        for given in ["trace", "debug,instant_epp=trace", "info"] {
            let f = super::quiet_secret_loggers(tracing_subscriber::EnvFilter::new(given));
            let text = f.to_string();
            assert!(text.contains("instant_epp=off"), "{given}: {text}");
            assert!(!text.contains("instant_epp=trace"), "{given}: {text}");
        }
    }
}

#[cfg(test)]
mod lock_tests {
    /// One server a SQLite file, whatever path names it: a symlink to the file itself
    /// takes the same lock (a second server started through one: found by the operator
    /// audit).
    #[test]
    fn a_symlink_to_the_database_takes_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lodge.db");
        std::fs::write(&db, b"").unwrap();
        let other = dir.path().join("alias");
        std::fs::create_dir(&other).unwrap();
        let link = other.join("lodge.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let _held = super::serve_lock(&db).unwrap();
        let refused = super::serve_lock(&link).unwrap_err();
        assert!(refused.to_string().contains("holds"), "{refused}");
    }
}
