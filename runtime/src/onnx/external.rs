//! ONNX external data: initializers whose values live in a file beside the
//! model, named by the tensor's `location` and found at its `offset`. This
//! is how `torch.onnx.export`'s default exporter writes weights, and the
//! only way a model over 2 GB (protobuf's limit) is stored.
//!
//! Like `raw_data` in the model file, the values are not read at load time:
//! a weight records its data file and offset, and each rank later reads only
//! the slice it holds. A location must stay inside the model's folder: a
//! model from elsewhere must not make mpinfer read `/etc/shadow` or
//! `../../secrets` as weights.

use super::proto::TensorProto;
use crate::error::ModelError;
use crate::model::ModelFile;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Where one tensor's values are.
pub(super) struct Location {
    pub file: Arc<ModelFile>,
    pub offset: u64,
    /// Bytes, when the model states it.
    pub length: Option<u64>,
}

impl Location {
    /// Checks that `bytes` bytes at the offset are what the tensor states and
    /// what its data file holds.
    pub fn check(&self, tensor: &str, bytes: u64) -> Result<(), ModelError> {
        let bad = |message: String| ModelError::Format {
            path: self.file.path.clone(),
            message: format!("tensor {tensor}: {message}"),
        };
        if let Some(length) = self.length.filter(|&l| l != bytes) {
            return Err(bad(format!(
                "its shape needs {bytes} bytes, its external data says length {length}"
            )));
        }
        match self.offset.checked_add(bytes) {
            Some(end) if end <= self.file.len => Ok(()),
            _ => Err(bad(format!(
                "{bytes} bytes at offset {} run past the end of the file ({} bytes)",
                self.offset, self.file.len
            ))),
        }
    }

    /// The tensor's `bytes` bytes, for the small constants read at load time
    /// (shapes, axes).
    pub fn read(&self, tensor: &str, bytes: u64) -> Result<Vec<u8>, ModelError> {
        self.check(tensor, bytes)?;
        let mut out = vec![0u8; bytes as usize];
        self.file
            .file
            .read_exact_at(&mut out, self.offset)
            .map_err(|error| ModelError::Io {
                path: self.file.path.clone(),
                error,
            })?;
        Ok(out)
    }
}

/// The data files of one model, each opened once.
pub(super) struct DataFiles {
    model: PathBuf,
    open: RefCell<HashMap<String, Arc<ModelFile>>>,
}

impl DataFiles {
    pub fn new(model: &Path) -> DataFiles {
        DataFiles {
            model: model.to_path_buf(),
            open: RefCell::default(),
        }
    }

    /// Where `t`'s values are, or `None` when they are in the model itself.
    pub fn locate(&self, t: &TensorProto) -> Result<Option<Location>, ModelError> {
        if t.data_location != 1 && t.external_data.is_empty() {
            return Ok(None);
        }
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.as_str())
        };
        let number = |key: &str| -> Result<Option<u64>, ModelError> {
            entry(key)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        self.bad(t, format!("external data {key} `{v}` is not a byte count"))
                    })
                })
                .transpose()
        };
        let location = entry("location")
            .ok_or_else(|| self.bad(t, "external data without a location".into()))?;
        Ok(Some(Location {
            file: self.open(t, location)?,
            offset: number("offset")?.unwrap_or(0),
            length: number("length")?,
        }))
    }

    fn open(&self, t: &TensorProto, location: &str) -> Result<Arc<ModelFile>, ModelError> {
        if let Some(f) = self.open.borrow().get(location) {
            return Ok(f.clone());
        }
        let path = self.resolve(t, location)?;
        let io = |error| ModelError::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let f = Arc::new(ModelFile { path, file, len });
        self.open
            .borrow_mut()
            .insert(location.to_string(), f.clone());
        Ok(f)
    }

    /// `location` relative to the model's folder, refused if it leads out
    /// of it, by its own components or through a link.
    fn resolve(&self, t: &TensorProto, location: &str) -> Result<PathBuf, ModelError> {
        let refuse = |why: &str| {
            self.bad(
                t,
                format!("external data location `{location}` {why}: it must name a file in the model's folder"),
            )
        };
        let relative = Path::new(location);
        if location.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(refuse("is absolute or climbs out with `..`"));
        }
        let folder = match self.model.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let path = folder.join(relative);
        let io = |p: &Path| {
            let path = p.to_path_buf();
            move |error| ModelError::Io { path, error }
        };
        let real_folder = folder.canonicalize().map_err(io(folder))?;
        let real = path.canonicalize().map_err(io(&path))?;
        if !real.starts_with(&real_folder) {
            return Err(refuse("leads out of the model's folder through a link"));
        }
        Ok(path)
    }

    fn bad(&self, t: &TensorProto, message: String) -> ModelError {
        ModelError::Format {
            path: self.model.clone(),
            message: format!("tensor {}: {message}", t.name),
        }
    }
}
