//! Applied migrations must never change: sqlx refuses to open a database whose applied
//! migration's checksum differs from the build's ("previously applied but has been
//! modified"), so an edit to a migration that has shipped locks every database made by the
//! builds before it out (found by the operator audit: two such edits were made on
//! 2026-12-03). `migrations/checksums.txt` pins each migration's checksum as sqlx computes
//! it; a new migration is added to it (`LODGE_UPDATE_SNAPSHOTS=1 cargo test -p lodge-store
//! pinned`), an old one is never changed.

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
        if std::env::var_os("LODGE_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &now).expect("write the checksums");
            return;
        }
        let pinned = std::fs::read_to_string(path).expect("migrations/checksums.txt");
        let now_lines: Vec<&str> = now.lines().collect();
        for line in pinned.lines() {
            let key: Vec<&str> = line.splitn(3, ' ').take(2).collect();
            let here = now_lines
                .iter()
                .find(|l| l.splitn(3, ' ').take(2).collect::<Vec<_>>() == key);
            assert_eq!(
                here.copied(),
                Some(line),
                "migration {key:?} was changed or removed after it was pinned: a shipped \
                 migration must never change (add a new one instead)"
            );
        }
        for line in &now_lines {
            assert!(
                pinned.lines().any(|p| p == *line),
                "a new migration is not pinned yet: run LODGE_UPDATE_SNAPSHOTS=1 cargo test -p \
                 lodge-store pinned (line: {line})"
            );
        }
    }
}
