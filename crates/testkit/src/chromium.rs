//! Headless Chromium (Debian's `chromium`, started per call, no network beyond loopback):
//! the page as the browser rendered it (the DOM after its scripts ran) and a screenshot,
//! checked to be a drawn page rather than a blank or error one. Follows the flags of
//! /work/shared/design/provisioning-payments.md §6 (no sandbox as root, no background
//! networking, no component updates).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The browser: `$LODGE_CHROMIUM`, else `chromium` or `chromium-browser` on the `PATH`.
pub fn chromium_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LODGE_CHROMIUM") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// A page as Chromium rendered it.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The DOM after the page's scripts ran (`--dump-dom`).
    pub dom: String,
    /// The screenshot (PNG).
    pub screenshot: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Share of the screenshot's pixels that are not the background colour (the most
    /// common one), 0.0 to 1.0: a blank page is 0.
    pub drawn: f64,
    /// Distinct colours in the screenshot.
    pub colours: usize,
}

fn args(profile: &Path) -> Vec<String> {
    vec![
        "--headless=new".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-extensions".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--hide-scrollbars".into(),
        "--virtual-time-budget=3000".into(),
        format!("--user-data-dir={}", profile.display()),
    ]
}

async fn run(binary: &Path, args: Vec<String>) -> Result<std::process::Output> {
    let child = tokio::process::Command::new(binary)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .context("chromium took longer than 60 s")?
        .context("running chromium")
}

/// Renders `url` (loopback only) at `width`×`height`: its DOM and a screenshot into `dir`.
pub async fn render(url: &str, dir: &Path, width: u32, height: u32) -> Result<Rendered> {
    let dom = dump_dom(url).await?;
    let Some(binary) = chromium_binary() else {
        bail!("chromium not found");
    };
    let shot = dir.join("page.png");
    let profile = tempfile::tempdir().context("chromium profile dir")?;
    let mut take = args(profile.path());
    take.push(format!("--window-size={width},{height}"));
    take.push(format!("--screenshot={}", shot.display()));
    take.push(url.into());
    let out = run(&binary, take).await?;
    if !out.status.success() || !shot.is_file() {
        bail!(
            "chromium --screenshot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (w, h, drawn, colours) = inspect(&shot)?;
    Ok(Rendered {
        dom,
        screenshot: shot,
        width: w,
        height: h,
        drawn,
        colours,
    })
}

/// The DOM of `url` (loopback only) after its scripts ran, and after any navigation they
/// made (`--dump-dom` prints the document the tab ends on).
pub async fn dump_dom(url: &str) -> Result<String> {
    let Some(binary) = chromium_binary() else {
        bail!("chromium not found");
    };
    if !(url.starts_with("http://127.") || url.starts_with("http://[::1]")) {
        bail!("only loopback pages are rendered: {url}");
    }
    let profile = tempfile::tempdir().context("chromium profile dir")?;
    let mut dump = args(profile.path());
    dump.push("--dump-dom".into());
    dump.push(url.into());
    let out = run(&binary, dump).await?;
    if !out.status.success() {
        bail!(
            "chromium --dump-dom failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Size, drawn share and distinct colours of a PNG.
pub fn inspect(png_path: &Path) -> Result<(u32, u32, f64, usize)> {
    let file = std::fs::File::open(png_path).context("open screenshot")?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().context("read PNG header")?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).context("decode PNG")?;
    let channels = info.color_type.samples();
    let bytes = buf.get(..info.buffer_size()).unwrap_or(&[]);
    let mut counts: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for px in bytes.chunks_exact(channels) {
        *counts.entry(px).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    let background = counts.values().copied().max().unwrap_or(0);
    let drawn = if total == 0 {
        0.0
    } else {
        (total - background) as f64 / total as f64
    };
    Ok((info.width, info.height, drawn, counts.len()))
}
