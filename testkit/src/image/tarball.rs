//! Deterministic tar archives: the same inputs give the same bytes on every machine.
//!
//! Every header gets fixed owner, time and a mode derived only from "is it executable", so a
//! layer's digest depends on file names and contents alone.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use tar::{EntryType, Header};

/// The mtime written into every entry (2020-01-01T00:00:00Z).
pub const MTIME: u64 = 1_577_836_800;

/// Builds an in-memory tar with normalized headers.
pub struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    /// Directories already written, so ancestors are emitted once.
    dirs: BTreeSet<String>,
}

impl Default for TarWriter {
    fn default() -> Self {
        TarWriter::new()
    }
}

impl TarWriter {
    pub fn new() -> TarWriter {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
            dirs: BTreeSet::new(),
        }
    }

    /// Adds directory `name` ("a/b") and any missing ancestors.
    pub fn dir(&mut self, name: &str) {
        let mut prefix = String::new();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            prefix.push_str(part);
            prefix.push('/');
            if self.dirs.insert(prefix.clone()) {
                self.entry(&prefix, EntryType::Directory, 0o755, &[]);
            }
        }
    }

    /// Adds a regular file (and its missing parent directories).
    pub fn file(&mut self, name: &str, executable: bool, data: &[u8]) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        let mode = if executable { 0o755 } else { 0o644 };
        self.entry(name, EntryType::Regular, mode, data);
    }

    /// The finished archive, with the two zero blocks that end it.
    pub fn finish(self) -> Vec<u8> {
        self.builder
            .into_inner()
            .expect("tar into a Vec cannot fail")
    }

    fn entry(&mut self, name: &str, kind: EntryType, mode: u32, data: &[u8]) {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        // Long names become GNU long-name entries; writing into a Vec cannot fail otherwise.
        self.builder
            .append_data(&mut h, name, data)
            .expect("tar entry");
    }
}

/// A deterministic tar of the regular files and directories under `root`.
///
/// Entry names are `root`'s own path without the leading `/` (so `/usr/share/doc` gives
/// `usr/share/doc/...`), walked in byte order of names. Symlinks, devices and anything
/// unreadable are skipped. Files that would take the content past `max_bytes` are skipped;
/// the walk stops once exactly `max_bytes` is reached. Panics if `root` does not exist.
pub fn dir_tar(root: impl AsRef<Path>, max_bytes: u64) -> Vec<u8> {
    let root = root.as_ref();
    let meta = fs::symlink_metadata(root)
        .unwrap_or_else(|e| panic!("testkit: cannot read {}: {e}", root.display()));
    let mut tar = TarWriter::new();
    let mut budget = max_bytes;
    let name = entry_name(root);
    if meta.is_dir() {
        add_dir(&mut tar, root, &name, &mut budget);
    } else if meta.is_file() {
        add_file(&mut tar, root, &name, &meta, &mut budget);
    }
    tar.finish()
}

/// `root` as a relative tar name: no leading `/`, no `.` parts.
pub(crate) fn entry_name(path: &Path) -> String {
    let parts = path.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
        _ => None,
    });
    parts.collect::<Vec<_>>().join("/")
}

/// Adds `dir` and its contents; returns false once the budget is used up.
fn add_dir(tar: &mut TarWriter, dir: &Path, name: &str, budget: &mut u64) -> bool {
    if !name.is_empty() {
        tar.dir(name);
    }
    let Ok(read) = fs::read_dir(dir) else {
        return true;
    };
    let mut children: Vec<_> = read.filter_map(Result::ok).map(|e| e.file_name()).collect();
    children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for child in children {
        let path = dir.join(&child);
        let child_name = match name {
            "" => child.to_string_lossy().into_owned(),
            _ => format!("{name}/{}", child.to_string_lossy()),
        };
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let go_on = if meta.is_dir() {
            add_dir(tar, &path, &child_name, budget)
        } else if meta.is_file() {
            add_file(tar, &path, &child_name, &meta, budget)
        } else {
            true
        };
        if !go_on {
            return false;
        }
    }
    true
}

fn add_file(
    tar: &mut TarWriter,
    path: &Path,
    name: &str,
    meta: &fs::Metadata,
    budget: &mut u64,
) -> bool {
    if meta.len() > *budget {
        return true;
    }
    // The size is checked again after reading: the file may have changed in between.
    let Ok(data) = fs::read(path) else {
        return true;
    };
    if data.len() as u64 > *budget {
        return true;
    }
    *budget -= data.len() as u64;
    tar.file(name, meta.permissions().mode() & 0o111 != 0, &data);
    *budget > 0
}
