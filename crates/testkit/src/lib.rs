//! Test helpers for Lodge.
//!
//! * [`pg`] starts one throwaway PostgreSQL cluster per test process and hands
//!   out fresh, empty databases on it.
//! * [`nginx`] runs private nginx instances for provisioning tests.
//! * [`pdns`] runs a private PowerDNS (gsqlite3, HTTP API) for DNS tests, and asks it with `dig`.
//! * [`pebble`] runs a private pebble (a test ACME CA) for TLS certificate tests.
//! * [`chromium`] renders a page in headless Chromium (DOM and a checked screenshot).
//! * [`localstripe`] runs a private localstripe (a fake Stripe) for payment tests.
//! * [`smtp`] runs aiosmtpd, a real SMTP server storing what it receives, for mail tests.
//! * [`directadmin`], [`cpanel`] and [`plesk`] are stateful fakes of the control panels'
//!   account APIs, on loopback ports over TLS with a self-signed certificate ([`tls`]).
//! * [`epp`] runs an in-process EPP registry (RFC 5730–5734) over TLS for registrar tests.
//!
//! External services are optional: when a binary is missing, tests call
//! [`skip_or_fail`] and return early. Setting `LODGE_REQUIRE_SERVICES=1` (e.g.
//! in CI) turns every such skip into a test failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod chromium;
pub mod cpanel;
pub mod directadmin;
pub mod epp;
pub mod localstripe;
pub mod mariadb;
pub mod nginx;
pub mod pdns;
pub mod pebble;
pub mod pg;
pub mod php;
pub mod plesk;
pub mod smtp;
pub mod tls;

/// True when `LODGE_REQUIRE_SERVICES=1`: missing services are then failures.
pub fn require_services() -> bool {
    std::env::var("LODGE_REQUIRE_SERVICES").is_ok_and(|v| v.trim() == "1")
}

/// A program of the Python test servers' virtual environment (localstripe, aiosmtpd):
/// `$LODGE_VENV/bin/<name>`, else `~/.cache/lodge-venv/bin/<name>` (where `.ci/run` makes
/// it), else `<name>` on the `PATH`.
pub fn venv_bin(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("LODGE_VENV") {
        dirs.push(std::path::PathBuf::from(v).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(std::path::PathBuf::from(home).join(".cache/lodge-venv/bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Reports an unavailable service. Panics when services are required,
/// otherwise prints `SKIP <what>: <why>` to stderr; the caller then returns.
pub fn skip_or_fail(what: &str, why: &str) {
    if require_services() {
        panic!("{what} is required (LODGE_REQUIRE_SERVICES=1) but unavailable: {why}");
    }
    eprintln!("SKIP {what}: {why}");
}

/// Effective uid of this process, read from `/proc/self/status` (falls back
/// to `id -u`).
pub(crate) fn euid() -> Option<u32> {
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    });
    from_proc.or_else(|| {
        let out = Command::new("id").arg("-u").output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
}

pub(crate) fn running_as_root() -> bool {
    euid() == Some(0)
}

/// `(uid, gid)` of a user from `/etc/passwd`.
pub(crate) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// A free TCP port on 127.0.0.1 for a server started by a test.
///
/// The port is released before the server binds it, so it is taken from
/// below the kernel's ephemeral range: a port the kernel hands out for a
/// `:0` bind or an outgoing connection (which tests make by the thousand)
/// can then never steal it in between. Ports handed out by this process are
/// not handed out again.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

    let (low, high) = server_port_range();
    let span = u128::from(high - low);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..200 {
        let offset = uuid::Uuid::new_v4().as_u128() % span;
        let port = low + u16::try_from(offset)?;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    // Everything tried was busy: fall back to the kernel's choice.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `[low, high)` of ports to pick servers' ports from: the 12,000 ports
/// below the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`,
/// 32768 by default), never below 1024.
fn server_port_range() -> (u16, u16) {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_low.max(2048);
    (high.saturating_sub(12_000).max(1024), high)
}

/// Looks `name` up in `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last `lines` lines of a (log) file, or a note that it is unreadable.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let skip = all.len().saturating_sub(lines);
            all.into_iter().skip(skip).collect::<Vec<_>>().join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// `(state, ppid)` of process `pid`, from `/proc/<pid>/stat`.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    let mut rest = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Whether `pid` runs (neither gone nor a zombie).
pub(crate) fn is_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Sends `signal` (`-TERM`, `-KILL`) to `target` (a pid, or `-<pgid>` for a process
/// group), quietly: the target may be gone already.
pub(crate) fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stderr(Stdio::null())
        .status();
}

/// Ends a server started by [`spawn_watchdog`] and everything in the watchdog's process
/// group: `SIGTERM`, up to `grace` for the watchdog to exit, then `SIGKILL`, and reaps it.
pub(crate) fn stop_process_group(watchdog: &mut std::process::Child, grace: Duration) {
    let group = format!("-{}", watchdog.id());
    signal("-TERM", &group);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(watchdog.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal("-KILL", &group);
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}

/// Waits until `ready()` holds, polling every 50 ms for up to `timeout`; fails with
/// `what` and the server's `log()` when the watchdog exits first or time runs out.
pub(crate) async fn wait_until_ready(
    watchdog: &mut std::process::Child,
    what: &str,
    timeout: Duration,
    log: impl Fn() -> String,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = watchdog.try_wait()? {
            anyhow::bail!("{what} exited ({status}); its log:\n{}", log());
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{what} did not start; its log:\n{}", log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Starts `sh -c <script> sh <args...>` detached from our process group
/// (a Ctrl-C must not kill it before it cleans up) with null stdio (so test
/// runners that capture output are not kept waiting by it).
pub(crate) fn spawn_watchdog(
    script: &str,
    args: &[&std::ffi::OsStr],
    run_as: Option<(u32, u32)>,
) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    Ok(cmd.spawn()?)
}
