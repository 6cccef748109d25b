//! Rank 0's output file, written so that a crash loses at most the last
//! half second of work.
//!
//! Rows go to `Y.partial` (a complete .npy header for the final shape, then
//! rows in order). Every half second the rows written so far are synced to
//! disk and only then `Y.resume` is replaced (write, sync, rename) with the
//! count of committed rows and fingerprints of the model and input. A rerun
//! with `--resume` trusts exactly the committed rows, truncates anything
//! after them, and continues. When the last row is in, the partial file is
//! synced and renamed to `Y`, and the manifest removed.

use anyhow::{bail, Context, Result};
use mpinfer_runtime::npy::{header_bytes, NpyDType};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const COMMIT_EVERY: Duration = Duration::from_millis(500);

pub struct Output {
    path: PathBuf,
    partial: PathBuf,
    manifest: PathBuf,
    out: BufWriter<File>,
    row_len: usize,
    rows: usize,
    written_rows: usize,
    /// What the manifest ties the rows to: shape and input fingerprints.
    identity: String,
    last_commit: Instant,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Committed rows recorded beside `path` for this `identity`, if any.
pub fn committed_rows(path: &Path, identity: &str) -> Result<Option<usize>> {
    let manifest = with_suffix(path, ".resume");
    let text = match std::fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}", manifest.display())),
    };
    let mut lines = text.lines();
    let (Some(id), Some(rows)) = (lines.next(), lines.next()) else {
        bail!("{}: not a resume manifest", manifest.display());
    };
    if id != identity {
        bail!(
            "{}: the interrupted run had another model, input or output shape ({id}; now {identity}); run without --resume to start over",
            manifest.display()
        );
    }
    let rows = rows
        .strip_prefix("committed_rows ")
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("{}: no committed_rows line", manifest.display()))?;
    Ok(Some(rows))
}

impl Output {
    /// Starts `path` afresh, or continues after `resume_rows` committed rows.
    pub fn open(
        path: &Path,
        shape: &[usize],
        identity: String,
        resume_rows: Option<usize>,
    ) -> Result<Output> {
        let partial = with_suffix(path, ".partial");
        let manifest = with_suffix(path, ".resume");
        let header = header_bytes(NpyDType::F32, shape);
        let row_len: usize = shape[1..].iter().product();
        let rows = shape[0];
        let (file, written_rows) = match resume_rows {
            Some(done) => {
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&partial)
                    .with_context(|| format!("cannot resume from {}", partial.display()))?;
                let mut head = vec![0u8; header.len()];
                std::io::Read::read_exact(&mut file, &mut head)
                    .with_context(|| format!("{}", partial.display()))?;
                let end = (header.len() + done * row_len * 4) as u64;
                if head != header || file.metadata()?.len() < end || done > rows {
                    bail!(
                        "{}: does not hold the {done} rows its manifest promises; run without --resume to start over",
                        partial.display()
                    );
                }
                // Rows after the last commit may be torn: drop them.
                file.set_len(end)?;
                file.seek(SeekFrom::Start(end))?;
                (file, done)
            }
            None => {
                let _ = std::fs::remove_file(&manifest);
                let mut file = File::create(&partial)
                    .with_context(|| format!("cannot write {}", partial.display()))?;
                file.write_all(&header)?;
                (file, 0)
            }
        };
        Ok(Output {
            path: path.to_path_buf(),
            partial,
            manifest,
            out: BufWriter::with_capacity(1 << 20, file),
            row_len,
            rows,
            written_rows,
            identity,
            last_commit: Instant::now(),
        })
    }

    pub fn write_rows(&mut self, values: &[f32]) -> Result<()> {
        let mut buf = Vec::with_capacity(values.len().min(1 << 14) * 4);
        for chunk in values.chunks(1 << 14) {
            buf.clear();
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            self.out
                .write_all(&buf)
                .with_context(|| format!("{}", self.partial.display()))?;
        }
        self.written_rows += values.len() / self.row_len.max(1);
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit()?;
        }
        Ok(())
    }

    /// Rows on disk first, then the manifest that counts them.
    fn commit(&mut self) -> Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        let text = format!("{}\ncommitted_rows {}\n", self.identity, self.written_rows);
        write_atomic(&self.manifest, text.as_bytes())?;
        self.last_commit = Instant::now();
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        if self.written_rows != self.rows {
            bail!(
                "{}: {} of {} rows written",
                self.path.display(),
                self.written_rows,
                self.rows
            );
        }
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        let _ = std::fs::remove_file(&self.manifest);
        Ok(())
    }
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory and a rename, so a reader never sees half a file and an
/// earlier version survives a failed write.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("mpinfer-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.svg");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1);
        assert!(write_atomic(&dir.join("missing/out.svg"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
