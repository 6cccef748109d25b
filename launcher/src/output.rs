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

/// One file of the output: a model output's rows.
struct OutputFile {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    row_len: usize,
}

/// The rows of every model output, each in its own file; one manifest,
/// beside the first file, counts the rows committed in all of them.
pub struct Output {
    files: Vec<OutputFile>,
    manifest: PathBuf,
    rows: usize,
    written_rows: usize,
    /// What the manifest ties the rows to: shapes and input fingerprints.
    identity: String,
    last_commit: Instant,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The files a run writes for outputs `names`: the first at `path`, each
/// other beside it with its name before the extension (`Y.npy`,
/// `Y.logits.npy`), characters a file name should not hold made `_`.
pub fn output_paths(path: &Path, names: &[&str]) -> Vec<PathBuf> {
    let text = path.to_string_lossy();
    let stem = text.strip_suffix(".npy").unwrap_or(&text);
    let mut out: Vec<PathBuf> = vec![path.to_path_buf()];
    for name in &names[1.min(names.len())..] {
        let clean: String = name
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
                _ => '_',
            })
            .collect();
        let mut candidate = PathBuf::from(format!("{stem}.{clean}.npy"));
        let mut k = 2;
        while out.contains(&candidate) {
            candidate = PathBuf::from(format!("{stem}.{clean}_{k}.npy"));
            k += 1;
        }
        out.push(candidate);
    }
    out
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

/// `path` started afresh, or continued after `done` committed rows.
fn open_file(path: &Path, shape: &[usize], done: Option<usize>) -> Result<OutputFile> {
    let partial = with_suffix(path, ".partial");
    let header = header_bytes(NpyDType::F32, shape);
    let row_len: usize = shape[1..].iter().product();
    let file = match done {
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
            if head != header || file.metadata()?.len() < end || done > shape[0] {
                bail!(
                    "{}: does not hold the {done} rows its manifest promises; run without --resume to start over",
                    partial.display()
                );
            }
            // Rows after the last commit may be torn: drop them.
            file.set_len(end)?;
            file.seek(SeekFrom::Start(end))?;
            file
        }
        None => {
            let mut file = File::create(&partial)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            file.write_all(&header)?;
            file
        }
    };
    Ok(OutputFile {
        path: path.to_path_buf(),
        partial,
        out: BufWriter::with_capacity(1 << 20, file),
        row_len,
    })
}

impl Output {
    /// Starts the files afresh, or continues after `resume_rows` committed
    /// rows. `files` are each output's path and shape; the manifest lies
    /// beside the first.
    pub fn open(
        files: &[(PathBuf, Vec<usize>)],
        identity: String,
        resume_rows: Option<usize>,
    ) -> Result<Output> {
        let manifest = with_suffix(&files[0].0, ".resume");
        if resume_rows.is_none() {
            let _ = std::fs::remove_file(&manifest);
        }
        let rows = files[0].1[0];
        let files = files
            .iter()
            .map(|(path, shape)| open_file(path, shape, resume_rows))
            .collect::<Result<Vec<_>>>()?;
        Ok(Output {
            files,
            manifest,
            rows,
            written_rows: resume_rows.unwrap_or(0),
            identity,
            last_commit: Instant::now(),
        })
    }

    /// Whole rows of every output side by side, as a packed output holds
    /// them.
    pub fn write_rows(&mut self, values: &[f32]) -> Result<()> {
        let row: usize = self.files.iter().map(|f| f.row_len).sum();
        let rows = values.len() / row.max(1);
        let mut buf = Vec::new();
        let mut at = 0;
        for f in &mut self.files {
            buf.clear();
            for r in 0..rows {
                let part = &values[r * row + at..r * row + at + f.row_len];
                buf.extend(part.iter().flat_map(|v| v.to_le_bytes()));
            }
            f.out
                .write_all(&buf)
                .with_context(|| format!("{}", f.partial.display()))?;
            at += f.row_len;
        }
        self.written_rows += rows;
        if self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit()?;
        }
        Ok(())
    }

    /// Rows on disk first, then the manifest that counts them.
    fn commit(&mut self) -> Result<()> {
        for f in &mut self.files {
            f.out.flush()?;
            f.out.get_ref().sync_data()?;
        }
        let text = format!("{}\ncommitted_rows {}\n", self.identity, self.written_rows);
        write_atomic(&self.manifest, text.as_bytes())?;
        self.last_commit = Instant::now();
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        if self.written_rows != self.rows {
            bail!(
                "{}: {} of {} rows written",
                self.files[0].path.display(),
                self.written_rows,
                self.rows
            );
        }
        for mut f in self.files {
            f.out.flush()?;
            f.out.get_ref().sync_all()?;
            std::fs::rename(&f.partial, &f.path)
                .with_context(|| format!("cannot write {}", f.path.display()))?;
        }
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

    #[test]
    fn several_outputs_take_their_part_of_each_row_and_resume_together() {
        let dir = std::env::temp_dir().join(format!("mpinfer-outputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = output_paths(&dir.join("y.npy"), &["logits", "a/b:0", "a_b_0"]);
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["y.npy", "y.a_b_0.npy", "y.a_b_0_2.npy"]);
        // Rows of 2 + 1 + 3 values: row r holds 10·r + column.
        let widths = [2, 1, 3];
        let files: Vec<(PathBuf, Vec<usize>)> = paths
            .iter()
            .zip(widths)
            .map(|(p, w)| (p.clone(), vec![5, w]))
            .collect();
        let rows = |r: std::ops::Range<usize>| -> Vec<f32> {
            r.flat_map(|r| (0..6).map(move |c| (10 * r + c) as f32))
                .collect()
        };
        let mut out = Output::open(&files, "id".into(), None).unwrap();
        out.write_rows(&rows(0..3)).unwrap();
        out.commit().unwrap();
        drop(out);
        assert_eq!(committed_rows(&paths[0], "id").unwrap(), Some(3));
        let mut out = Output::open(&files, "id".into(), Some(3)).unwrap();
        out.write_rows(&rows(3..5)).unwrap();
        out.finish().unwrap();
        let mut at = 0;
        for (path, w) in paths.iter().zip(widths) {
            let f = mpinfer_runtime::npy::NpyFile::open(path).unwrap();
            assert_eq!(f.shape(), &[5, w][..]);
            let got = f.read_rows(0..5).unwrap().data;
            let want: Vec<f32> = (0..5)
                .flat_map(|r| (at..at + w).map(move |c| (10 * r + c) as f32))
                .collect();
            assert_eq!(got, want, "{}", path.display());
            at += w;
        }
        assert_eq!(committed_rows(&paths[0], "id").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
