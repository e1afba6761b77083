//! Applied migrations must never change: sqlx refuses to open a database whose applied
//! migration's checksum differs from the build's ("previously applied but has been
//! modified"), so an edit to a migration that has shipped locks every database made by the
//! builds before it out (found by the operator audit: two such edits were made on
//! 2026-12-03). `migrations/checksums.txt` pins each migration's checksum as sqlx computes
//! it; a new migration is added to it (`LODGE_PIN_NEW_MIGRATIONS=1 cargo test -p
//! lodge-store pinned`, which only ever adds lines), an old one is never changed.

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    fn current() -> String {
        let mut out = String::new();
        for (engine, migrator) in [
            ("sqlite", &crate::sqlite::MIGRATIONS),
            ("postgres", &crate::postgres::MIGRATIONS),
        ] {
            for m in migrator.iter() {
                let hex = m.checksum.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "{b:02x}");
                    s
                });
                let _ = writeln!(out, "{engine} {:04} {hex} {}", m.version, m.description);
            }
        }
        out
    }

    #[test]
    fn pinned_migrations_are_unchanged() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/checksums.txt");
        let now = current();
        let pinned = std::fs::read_to_string(path).unwrap_or_default();
        let key = |l: &str| l.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" ");
        let now_lines: Vec<&str> = now.lines().collect();
        for line in pinned.lines() {
            let here = now_lines.iter().find(|l| key(l) == key(line));
            assert_eq!(
                here.copied(),
                Some(line),
                "migration {} was changed or removed after it was pinned: a shipped \
                 migration must never change (add a new one instead)",
                key(line)
            );
        }
        let new: Vec<&str> = now_lines
            .iter()
            .copied()
            .filter(|l| !pinned.lines().any(|p| key(p) == key(l)))
            .collect();
        if new.is_empty() {
            return;
        }
        // Its own variable (not the snapshots' one): pinning only ever adds lines.
        if std::env::var_os("LODGE_PIN_NEW_MIGRATIONS").is_some() {
            let mut out = pinned.clone();
            for line in &new {
                out.push_str(line);
                out.push('\n');
            }
            std::fs::write(path, out).expect("write the checksums");
            return;
        }
        panic!(
            "new migrations are not pinned yet: run LODGE_PIN_NEW_MIGRATIONS=1 cargo test -p \
             lodge-store pinned\n{}",
            new.join("\n")
        );
    }
}
